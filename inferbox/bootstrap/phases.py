"""The platform's phases: which chart, in which namespace, after what, checked how.

Chart coordinates and versions come from versions.toml; values from helm-values/. The
expected durations are the budget a phase typically needs on a laptop kind cluster with a
warm image cache (see README "Install plan"); they drive the critical-path estimate and are
replaced by measured durations when an event log is given to bench/plan_bench.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from inferbox.bootstrap.charts import archive_name, chart_name
from inferbox.bootstrap.plan import CheckKind, ClusterStep, HealthCheck, Phase, Plan, PreStep
from inferbox.config import ChartPin, Settings
from inferbox.errors import ConfigError
from inferbox.models.catalog import GPU_RESOURCE, default_catalog_path, load_catalog
from inferbox.tools.helm import ChartSource

CRD = CheckKind.CRD_ESTABLISHED
DEPLOY = CheckKind.DEPLOYMENT_AVAILABLE
DAEMONSET = CheckKind.DAEMONSET_READY
STATEFULSET = CheckKind.STATEFULSET_READY
WEBHOOK = CheckKind.WEBHOOK_READY

GPU_NAMESPACE = "nvidia-gpu"
GATEWAY_NAMESPACE = "istio-ingress"
# Knative mode: KServe sends a model's traffic to Knative's local gateway Service, which the
# knative-serving phase puts beside the gateway pods (manifests/knative-serving.yaml.j2); the
# chart's default names istio-system (kserve/kserve charts/kserve-resources/values.yaml@v0.20.0).
KNATIVE_LOCAL_GATEWAY = f"knative-local-gateway.{GATEWAY_NAMESPACE}.svc.cluster.local"
KSERVE_NAMESPACE = "kserve"
KSERVE_WEBHOOK_SERVICE = "kserve-webhook-server-service"
# Envoy Gateway's and the AI gateway's install namespaces, as their docs install them
# (gateway site/content/en/v1.9/install/install-helm.md@v1.9.0; ai-gateway
# site/versioned_docs/version-1.1/getting-started/installation.md@v1.1.0). The AI gateway's chart
# tells the controller where Envoy Gateway runs (envoyGateway.namespace, this default).
ENVOY_GATEWAY_NAMESPACE = "envoy-gateway-system"
AI_GATEWAY_NAMESPACE = "envoy-ai-gateway-system"
# Fixed names (templates/deployment.yaml of each chart at the pinned tag).
ENVOY_GATEWAY_DEPLOYMENT = "envoy-gateway"
AI_GATEWAY_CONTROLLER = "ai-gateway-controller"
# The Gateway inferbox renders for the AI gateway (manifests/aigateway/gateway.yaml.j2); Envoy
# Gateway names its proxy Deployment and Service after it (EnvoyProxy envoyDeployment/envoyService name).
AI_GATEWAY_NAME = "inferbox-ai"
AI_GATEWAY_REDIS = "inferbox-ratelimit-redis"
ENVOY_RATELIMIT = "envoy-ratelimit"
TRACING_NAMESPACE = "tracing"
# The jaeger chart's fullname is the release name when it contains the chart's name
# (jaegertracing/helm-charts charts/jaeger/templates/_helpers.tpl, at the pinned chart): Deployment and
# Service "jaeger", OTLP gRPC on 4317, the query UI on 16686 (templates/jaeger/jaeger-service.yaml).
JAEGER_DEPLOYMENT = "jaeger"
JAEGER_HOST = f"{JAEGER_DEPLOYMENT}.{TRACING_NAMESPACE}.svc.cluster.local"
JAEGER_OTLP_GRPC_PORT = 4317
JAEGER_QUERY_PORT = 16686
JAEGER_GRPC_QUERY_PORT = 16685
# kube-prometheus-stack's Prometheus Service (<release>-prometheus, port 9090) of the monitoring phase.
PROMETHEUS_URL = "http://kube-prometheus-stack-prometheus.monitoring.svc.cluster.local:9090"
# The mesh's tracing provider (istiod meshConfig.extensionProviders), named by the Telemetry.
TRACING_PROVIDER = "inferbox-otel"
# How long the verifiers cache the JWKS: istiod's PILOT_JWT_PUB_KEY_REFRESH_INTERVAL (default
# 20m, istio/istio pilot/pkg/features/pilot.go@1.30.3) and the gateway's remoteJWKS cacheDuration.
JWKS_REFRESH = "5m"
# kiali-server's deployment.instance_name default (kiali/helm-charts kiali-server/values.yaml@v2.26.0).
KIALI_DEPLOYMENT = "kiali"


def _probe(api_version: str, kind: str, namespace: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A minimal object a webhook must admit in a server-side dry run (nothing is stored)."""
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": "inferbox-webhook-probe", "namespace": namespace}, **spec}


def _source(pin: ChartPin, override: Path | None, store: Path | None) -> tuple[ChartSource, str, str]:
    """(source, chart name, chart version) for a pin: the pinned remote chart, its archive in a
    chart store, or a local chart folder overriding it."""
    if override is not None:
        # A local chart folder (tests, air-gapped installs): no repository, no version flag;
        # name and version are the folder's own, as helm will record them.
        try:
            meta = yaml.safe_load((override / "Chart.yaml").read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(str(override / "Chart.yaml"), [("<file>", str(exc))]) from exc
        return ChartSource(chart=str(override), version=None), str(meta["name"]), str(meta["version"])
    if store is not None:
        return ChartSource(chart=str(store / archive_name(pin)), version=None), chart_name(pin), pin.version
    return ChartSource(chart=pin.chart, version=pin.version, repo=pin.repo), chart_name(pin), pin.version


def build_plan(settings: Settings, *, gpu: bool) -> Plan:
    """The full plan for these settings; ``gpu`` is the resolved --gpu mode."""
    charts = settings.versions.charts
    values_dir = settings.root / "helm-values"

    def phase(name: str, chart_key: str, namespace: str, **kwargs: Any) -> Phase:
        values = values_dir / f"{name}.yaml"
        source, named, version = _source(charts.by_key(chart_key), settings.chart_overrides.get(name),
                                         settings.chart_store)
        return Phase(name=name, release=kwargs.pop("release", name), namespace=namespace, chart_key=chart_key,
                     chart=source, chart_name=named, chart_version=version,
                     values_file=values if values.is_file() else None, **kwargs)

    phases = [
        phase("cert-manager", "cert-manager", "cert-manager", timeout_s=300, expected_s=60, checks=(
            HealthCheck(CRD, "certificates.cert-manager.io"),
            HealthCheck(CRD, "issuers.cert-manager.io"),
            HealthCheck(CRD, "clusterissuers.cert-manager.io"),
            HealthCheck(DEPLOY, "cert-manager", "cert-manager"),
            HealthCheck(DEPLOY, "cert-manager-cainjector", "cert-manager"),
            HealthCheck(DEPLOY, "cert-manager-webhook", "cert-manager"),
            HealthCheck(WEBHOOK, "cert-manager-webhook", "cert-manager", probe=_probe(
                "cert-manager.io/v1", "Issuer", "cert-manager", {"spec": {"selfSigned": {}}})),
        )),
        phase("istio-base", "istio-base", "istio-system", depends_on=("cert-manager",),
              timeout_s=120, expected_s=10, checks=(
            HealthCheck(CRD, "peerauthentications.security.istio.io"),
            HealthCheck(CRD, "requestauthentications.security.istio.io"),
            HealthCheck(CRD, "authorizationpolicies.security.istio.io"),
            HealthCheck(CRD, "virtualservices.networking.istio.io"),
            HealthCheck(CRD, "gateways.networking.istio.io"),
        )),
        # The CNI node agent sets up each pod's traffic redirection, replacing the istio-init
        # container whose NET_ADMIN/NET_RAW the tenants' Pod Security level (baseline) forbids.
        phase("istio-cni", "istio-cni", "istio-system", depends_on=("istio-base",), timeout_s=300, expected_s=30,
              checks=(HealthCheck(DAEMONSET, "istio-cni-node", "istio-system"),)),
        phase("istiod", "istiod", "istio-system", depends_on=("istio-cni",), timeout_s=300, expected_s=45,
              set_values=_istiod_values(settings), checks=(
            HealthCheck(DEPLOY, "istiod", "istio-system"),
            HealthCheck(WEBHOOK, "istiod", "istio-system", probe=_probe(
                "security.istio.io/v1", "PeerAuthentication", "istio-system", {"spec": {"mtls": {"mode": "STRICT"}}})),
        )),
        # KServe's Standard mode routes each model through an Ingress of class "istio"; Istio serves
        # it only when that IngressClass exists (manifests/istio/ingressclass.yaml.j2).
        phase("istio-ingressgateway", "istio-gateway", GATEWAY_NAMESPACE, depends_on=("istiod",),
              timeout_s=300, expected_s=30, manifests=("istio/ingressclass.yaml.j2",), checks=(
            HealthCheck(DEPLOY, "istio-ingressgateway", GATEWAY_NAMESPACE),
        )),
        phase("kserve-crd", "kserve-crd", KSERVE_NAMESPACE, depends_on=("cert-manager", "istiod"),
              timeout_s=120, expected_s=10, checks=(
            HealthCheck(CRD, "inferenceservices.serving.kserve.io"),
            HealthCheck(CRD, "servingruntimes.serving.kserve.io"),
            HealthCheck(CRD, "clusterservingruntimes.serving.kserve.io"),
            HealthCheck(CRD, "inferencegraphs.serving.kserve.io"),
            HealthCheck(CRD, "trainedmodels.serving.kserve.io"),
        )),
        phase("kserve", "kserve", KSERVE_NAMESPACE, depends_on=("kserve-crd",), timeout_s=420, expected_s=75,
              pre_steps=(PreStep.CLEANUP_ORPHANED_WEBHOOKS,), webhook_service=KSERVE_WEBHOOK_SERVICE,
              # "Standard" is 0.16+'s name for RawDeployment; "Knative" for Serverless.
              set_values={"kserve.controller.deploymentMode": "Knative" if settings.knative else "Standard",
                          **({"kserve.controller.gateway.localGateway.gatewayService": KNATIVE_LOCAL_GATEWAY,
                              "kserve.controller.gateway.localGateway.knativeGatewayService": KNATIVE_LOCAL_GATEWAY}
                             if settings.knative else {})},
              checks=(
            HealthCheck(DEPLOY, "kserve-controller-manager", KSERVE_NAMESPACE),
            HealthCheck(WEBHOOK, KSERVE_WEBHOOK_SERVICE, KSERVE_NAMESPACE, probe=_probe(
                "serving.kserve.io/v1beta1", "InferenceService", KSERVE_NAMESPACE,
                {"spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                                                  "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}})),
        )),
        phase("kserve-runtimes", "kserve-runtime-configs", KSERVE_NAMESPACE, release="kserve-runtime-configs",
              depends_on=("kserve",), timeout_s=120, expected_s=10, checks=tuple(
            # Every runtime the model catalog uses; admitted through KServe's webhook.
            HealthCheck(CheckKind.RESOURCE_EXISTS, runtime, api_version="serving.kserve.io/v1alpha1",
                        resource_kind="ClusterServingRuntime") for runtime in sorted(catalog_runtimes(settings.root)))),
    ]
    if settings.knative:
        phases.append(phase(
            "knative-serving", "knative-operator", "knative-operator", release="knative-operator",
            # Its knative-local-gateway Service goes into the gateway's namespace.
            depends_on=("istiod", "istio-ingressgateway"), timeout_s=600, expected_s=120,
            manifests=("knative-serving.yaml.j2",), checks=(
                HealthCheck(DEPLOY, "knative-operator", "knative-operator"),
                HealthCheck(DEPLOY, "operator-webhook", "knative-operator"),
                HealthCheck(CheckKind.CONDITION_READY, "knative-serving", "knative-serving",
                            api_version="operator.knative.dev/v1beta1", resource_kind="KnativeServing"),
            )))
        # KServe's Serverless mode needs Knative up before the controller starts.
        phases = [_with_dependency(p, "knative-serving") if p.name == "kserve" else p for p in phases]
    if settings.ai_gateway:
        phases += ai_gateway_phases(settings, phase)
    if settings.monitoring:
        phases += tracing_phases(phase)
        phases.append(phase(
            "monitoring", "kube-prometheus-stack", "monitoring", release="kube-prometheus-stack",
            timeout_s=600, expected_s=150,
            # Scrape monitors, alert rules, dashboard ConfigMaps (inferbox.observability.manifests).
            manifests=("monitoring/scrape.yaml.j2", "monitoring/rules.yaml.j2", "monitoring/dashboards.yaml.j2"),
            checks=(
                HealthCheck(CRD, "podmonitors.monitoring.coreos.com"),
                HealthCheck(CRD, "servicemonitors.monitoring.coreos.com"),
                HealthCheck(CRD, "prometheusrules.monitoring.coreos.com"),
                HealthCheck(DEPLOY, "kube-prometheus-stack-operator", "monitoring"),
                HealthCheck(DEPLOY, "kube-prometheus-stack-grafana", "monitoring"),
                HealthCheck(DEPLOY, "kube-prometheus-stack-kube-state-metrics", "monitoring"),
                HealthCheck(STATEFULSET, "prometheus-kube-prometheus-stack-prometheus", "monitoring"),
            )))
    if gpu:
        phases.append(phase(
            "gpu-device-plugin", "nvidia-device-plugin", GPU_NAMESPACE, release="nvidia-device-plugin",
            timeout_s=300, expected_s=40, checks=(
                HealthCheck(DAEMONSET, "nvidia-device-plugin", GPU_NAMESPACE),
                # The plugin pods being ready is not enough: each must find its node's GPUs.
                # Its pods' labels: templates/_helpers.tpl (templateLabels) in NVIDIA/k8s-device-plugin
                # deployments/helm/nvidia-device-plugin@v0.20.0.
                HealthCheck(CheckKind.GPU_ALLOCATABLE, GPU_RESOURCE, GPU_NAMESPACE,
                            selector="app.kubernetes.io/name=nvidia-device-plugin,"
                                     "app.kubernetes.io/instance=nvidia-device-plugin"),
            )))
        phases.append(phase(
            "dcgm-exporter", "dcgm-exporter", GPU_NAMESPACE, release="dcgm-exporter",
            # Its ServiceMonitor needs the prometheus-operator CRDs.
            depends_on=("gpu-device-plugin", *(("monitoring",) if settings.monitoring else ())),
            set_values={"serviceMonitor.enabled": "true" if settings.monitoring else "false"},
            timeout_s=300, expected_s=60, checks=(
                HealthCheck(DAEMONSET, "dcgm-exporter", GPU_NAMESPACE),
            )))
    cluster = ClusterStep(provider=settings.provider.value, name=settings.cluster_name,
                          context=settings.kube_context, node_image=settings.versions.kubernetes.kind_node_image,
                          gpu=gpu)
    return Plan(cluster=cluster, phases=tuple(phases))


def ai_gateway_phases(settings: Settings, phase: Callable[..., Phase]) -> list[Phase]:
    """Envoy Gateway, the AI gateway's CRDs and controller, and the gateway objects inferbox
    owns (manifests/aigateway/): README, "AI gateway"."""
    eg = ENVOY_GATEWAY_NAMESPACE
    gateway_crds = ("gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io",
                    "backends.gateway.envoyproxy.io", "envoyproxies.gateway.envoyproxy.io",
                    "securitypolicies.gateway.envoyproxy.io", "backendtrafficpolicies.gateway.envoyproxy.io",
                    "clienttrafficpolicies.gateway.envoyproxy.io", "httproutefilters.gateway.envoyproxy.io")
    return [
        # Its proxies get an Istio sidecar (outbound mTLS to the predictors), so istiod comes first.
        phase("envoy-gateway", "envoy-gateway", eg, depends_on=("istiod",), timeout_s=300, expected_s=45,
              set_values={
                  # Where the AI gateway's extension server and the Redis are (helm-values/envoy-gateway.yaml
                  # has the rest of the AI gateway's required values).
                  "config.envoyGateway.extensionManager.service.fqdn.hostname":
                      f"{AI_GATEWAY_CONTROLLER}.{AI_GATEWAY_NAMESPACE}.svc.cluster.local",
                  "config.envoyGateway.rateLimit.backend.redis.url": f"{AI_GATEWAY_REDIS}.{eg}.svc.cluster.local:6379",
              },
              # The Redis the global rate limit (token budgets) counts in, before the controller
              # configures the rate-limit service that connects to it.
              manifests=("aigateway/redis.yaml.j2",), checks=(
            *(HealthCheck(CRD, crd) for crd in gateway_crds),
            HealthCheck(DEPLOY, ENVOY_GATEWAY_DEPLOYMENT, eg),
            HealthCheck(DEPLOY, AI_GATEWAY_REDIS, eg, resource_kind="Deployment"),
            # Envoy Gateway starts its rate-limit service itself once its configuration names a
            # backend; the service needs the Redis above (gateway internal/infrastructure/runner/
            # runner.go@v1.9.0, initializeRateLimitInfra; kubernetes/ratelimit/resource.go, InfraName).
            HealthCheck(DEPLOY, ENVOY_RATELIMIT, eg, after_manifests=True),
        )),
        phase("ai-gateway-crds", "ai-gateway-crds", AI_GATEWAY_NAMESPACE, depends_on=("envoy-gateway",),
              timeout_s=120, expected_s=10, checks=(
            HealthCheck(CRD, "aigatewayroutes.aigateway.envoyproxy.io"),
            HealthCheck(CRD, "aiservicebackends.aigateway.envoyproxy.io"),
        )),
        # The controller's pod webhook (failurePolicy Fail) injects the external processor into
        # every Envoy proxy pod, so it is up before the Gateway makes the first one.
        phase("ai-gateway", "ai-gateway", AI_GATEWAY_NAMESPACE, depends_on=("ai-gateway-crds",),
              timeout_s=300, expected_s=60, manifests=("aigateway/jwks.yaml.j2", "aigateway/gateway.yaml.j2"),
              set_values=_extproc_tracing(settings), checks=(
            HealthCheck(DEPLOY, AI_GATEWAY_CONTROLLER, AI_GATEWAY_NAMESPACE),
            # Programmed: Envoy Gateway has deployed the proxies and given the Gateway an address.
            HealthCheck(CheckKind.CONDITION_READY, AI_GATEWAY_NAME, eg, api_version="gateway.networking.k8s.io/v1",
                        resource_kind="Gateway", condition="Programmed"),
        )),
    ]


def _extproc_tracing(settings: Settings) -> dict[str, str]:
    """The AI gateway's external processor sends spans to Jaeger over OTLP gRPC, in the GenAI
    semantic conventions (ai-gateway manifests/charts/ai-gateway-helm/values.yaml@v1.1.0,
    extProc.extraEnvVars; site/versioned_docs/version-1.1/capabilities/observability/tracing.md)."""
    if not settings.monitoring:
        return {}
    env = {"OTEL_SERVICE_NAME": "ai-gateway-extproc", "OTEL_TRACES_EXPORTER": "otlp",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{JAEGER_HOST}:{JAEGER_OTLP_GRPC_PORT}",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "AI_GATEWAY_TRACING_SEMCONV": "gen_ai"}
    return {"extProc.extraEnvVars": json.dumps([{"name": k, "value": v} for k, v in env.items()])}


def _istiod_values(settings: Settings) -> dict[str, str]:
    values = {"pilot.env.PILOT_JWT_PUB_KEY_REFRESH_INTERVAL": JWKS_REFRESH}
    if settings.monitoring:
        # Jaeger's OTLP gRPC port as the mesh's tracing provider (istio/api
        # mesh/v1alpha1/config.proto@1.30.3, OpenTelemetryTracingProvider); the tracing phase's
        # Telemetry turns it on.
        values["meshConfig.extensionProviders"] = json.dumps([{"name": TRACING_PROVIDER, "opentelemetry": {
            "service": JAEGER_HOST, "port": JAEGER_OTLP_GRPC_PORT}}])
    return values


def tracing_phases(phase: Callable[..., Phase]) -> list[Phase]:
    """Jaeger (traces from the sidecars and the AI gateway over OTLP) and Kiali (the mesh graph,
    reading Prometheus and Jaeger)."""
    return [
        phase("tracing", "jaeger", TRACING_NAMESPACE, release="jaeger", depends_on=("istiod",),
              timeout_s=300, expected_s=40, manifests=("tracing/telemetry.yaml.j2",), checks=(
            HealthCheck(DEPLOY, JAEGER_DEPLOYMENT, TRACING_NAMESPACE),
        )),
        phase("kiali", "kiali-server", "istio-system", release="kiali", depends_on=("istiod", "monitoring", "tracing"),
              timeout_s=300, expected_s=40, set_values={
                  "external_services.prometheus.url": PROMETHEUS_URL,
                  "external_services.tracing.internal_url": f"http://{JAEGER_HOST}:{JAEGER_GRPC_QUERY_PORT}",
                  # Kiali's links to traces open the Jaeger UI where `invoke dashboards` forwards it.
                  "external_services.tracing.external_url": f"http://127.0.0.1:{JAEGER_QUERY_PORT}",
              }, checks=(
            HealthCheck(DEPLOY, KIALI_DEPLOYMENT, "istio-system"),
        )),
    ]


def catalog_runtimes(root: Path) -> dict[str, str]:
    """Each ClusterServingRuntime models/catalog.yaml uses -> the first place that uses it
    ("models/catalog.yaml: models.sklearn-iris.runtime"), for the render check's messages."""
    path = default_catalog_path(root)
    used: dict[str, str] = {}
    for name, model in sorted(load_catalog(path).models.items()):
        used.setdefault(model.runtime, f"{path.relative_to(root)}: models.{name}.runtime")
    return used


def _with_dependency(phase: Phase, dependency: str) -> Phase:
    return replace(phase, depends_on=(*phase.depends_on, dependency))
