"""The platform's phases: which chart, in which namespace, after what, checked how.

Chart coordinates and versions come from versions.toml; values from helm-values/. The
expected durations are the budget a phase typically needs on a laptop kind cluster with a
warm image cache (see README "Install plan"); they drive the critical-path estimate and are
replaced by measured durations when an event log is given to bench/plan_bench.py.
"""

from __future__ import annotations

from collections.abc import Mapping
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
        phase("istiod", "istiod", "istio-system", depends_on=("istio-cni",), timeout_s=300, expected_s=45, checks=(
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
    if settings.monitoring:
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
