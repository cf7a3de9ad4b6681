"""The monitoring objects inferbox installs: scrape monitors, alert rules, dashboard ConfigMaps.

They are Jinja2 templates under manifests/monitoring/, applied by the ``monitoring`` phase after
kube-prometheus-stack (``MONITORING_TEMPLATES`` belongs in that phase's ``manifests=``), with the
context ``manifest_context(settings)`` builds: everything under one key, ``observability``, so it
merges with the other phases' context without clashes.

Names and namespaces come from the plan (inferbox.bootstrap.phases), not from literals here: the namespace of
the monitoring phase, the ingress gateway's namespace and release, every platform namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from inferbox.aigateway import BUDGET_RECORD, PROXY_POD_LABELS
from inferbox.bootstrap.phases import ENVOY_GATEWAY_NAMESPACE, build_plan
from inferbox.bootstrap.plan import Phase, Plan
from inferbox.config import Settings
from inferbox.errors import InferboxError
from inferbox.observability.promql import Expression
from inferbox.render import Renderer

MONITORING_TEMPLATES = ("monitoring/scrape.yaml.j2", "monitoring/rules.yaml.j2", "monitoring/dashboards.yaml.j2")
MONITORING_PHASE = "monitoring"
GATEWAY_PHASE = "istio-ingressgateway"
DASHBOARDS_DIR = "dashboards"

# KServe's label on every predictor pod: the InferenceService's name.
ISVC_LABEL = "serving.kserve.io/inferenceservice"
# The Istio agent's merged metrics (Envoy + agent + the app's annotated endpoint).
ISTIO_METRICS_PORT = 15020
ISTIO_METRICS_PATH = "/stats/prometheus"
# The one port the istio-proxy container declares (Envoy's own stats, 15090).
ISTIO_DECLARED_PORT = "http-envoy-prom"
GPU_MEMORY_RATIO_RECORD = "inferbox:gpu_memory_used:ratio"
RULES_NAME = "inferbox-alerts"
PREDICTORS_MONITOR = "kserve-predictors"
GATEWAY_MONITOR = "istio-ingressgateway"
# The AI gateway's usage metrics (inferbox.observability.metrics.AI_GATEWAY): the external processor
# the AI gateway injects into each Envoy proxy pod serves them on its admin port, named aigw-admin
# (envoyproxy/ai-gateway internal/controller/extproc_builder.go@v1.1.0, extProcAdminPort 1064), at
# /metrics (cmd/extproc/mainlib/main.go@v1.1.0). Envoy Gateway labels the proxy pods with their
# Gateway (envoyproxy/gateway internal/infrastructure/kubernetes/proxy/resource.go@v1.9.0 and
# internal/gatewayapi/translator.go@v1.9.0, the owning-gateway labels).
AI_GATEWAY_MONITOR = "ai-gateway"
AI_GATEWAY_METRICS_PORT = "aigw-admin"
AI_GATEWAY_METRICS_PATH = "/metrics"
AI_GATEWAY_POD_LABELS = {**PROXY_POD_LABELS, "app.kubernetes.io/managed-by": "envoy-gateway"}
# Tokens per second each tenant spends, per token_type (input, output, total), over TOKENS_WINDOW.
TOKENS_RECORD = "inferbox:tenant_tokens:rate5m"
TOKENS_WINDOW = "5m"
# Series recorded by rules that live outside manifests/monitoring/ but that the dashboards and
# rules query: BUDGET_RECORD, the tenants' token budgets, is recorded by a PrometheusRule in each
# tenant's namespace (manifests/tenant/aigateway.yaml.j2).
TENANT_RECORDS = frozenset({BUDGET_RECORD})
COMMON_LABELS = {"app.kubernetes.io/managed-by": "inferbox", "app.kubernetes.io/part-of": "inferbox-observability"}


@dataclass(frozen=True)
class AlertThresholds:
    """The alerts' thresholds and durations (the platform's default SLO)."""

    p95_latency_ms: int = 1000
    error_ratio: float = 0.05
    gpu_memory_ratio: float = 0.9
    predictor_restarts: int = 2  # more than this many restarts in restart_window
    restart_window: str = "30m"
    rate_window: str = "5m"
    slo_for: str = "10m"
    down_for: str = "5m"
    gpu_for: str = "15m"
    rollout_for: str = "10m"
    budget_burn_ratio: float = 0.8  # a tenant's token usage over its budget's rate
    budget_burn_for: str = "15m"


def full_plan(settings: Settings) -> Plan:
    """The plan with every optional phase on: the set of components the platform can run."""
    return build_plan(replace(settings, knative=True, monitoring=True), gpu=True)


def _phase(plan: Plan, name: str) -> Phase:
    for phase in plan.phases:
        if phase.name == name:
            return phase
    raise InferboxError(f"the install plan has no {name!r} phase")


def monitoring_namespace(settings: Settings) -> str:
    return _phase(full_plan(settings), MONITORING_PHASE).namespace


def platform_namespaces(settings: Settings) -> list[str]:
    """Every namespace a phase installs into or waits on (e.g. knative-serving for its CR)."""
    plan = full_plan(settings)
    names = {p.namespace for p in plan.phases} | {c.namespace for p in plan.phases for c in p.checks if c.namespace}
    return sorted(names)


def platform_namespace_regex(settings: Settings) -> str:
    return "|".join(platform_namespaces(settings))


def dashboard_files(root: Path) -> list[Path]:
    files = sorted((root / DASHBOARDS_DIR).glob("*.json"))
    if not files:
        raise InferboxError(f"no dashboards found in {root / DASHBOARDS_DIR}")
    return files


def dashboard_configmap_name(path: Path) -> str:
    return f"inferbox-dashboard-{path.stem}"


def manifest_context(settings: Settings, *, namespace: str | None = None,
                     thresholds: AlertThresholds | None = None,
                     predictor_namespaces: Sequence[str] = ()) -> dict[str, Any]:
    """The templates' context. ``predictor_namespaces`` empty: predictors in any namespace.

    ``namespace`` overrides where the objects go (tests use a fresh one); by default the
    monitoring phase's namespace.
    """
    plan = full_plan(settings)
    gateway = _phase(plan, GATEWAY_PHASE)
    return {"observability": {
        "namespace": namespace or _phase(plan, MONITORING_PHASE).namespace,
        "labels": dict(COMMON_LABELS),
        "scrape_interval": "30s",
        "istio": {"metrics_port": ISTIO_METRICS_PORT, "metrics_path": ISTIO_METRICS_PATH,
                  "declared_port_name": ISTIO_DECLARED_PORT},
        "predictors": {"name": PREDICTORS_MONITOR, "namespaces": list(predictor_namespaces),
                       "model_label": ISVC_LABEL, "model_meta_label": pod_label_meta(ISVC_LABEL)},
        # The istio/gateway chart labels its pods istio=<release name without "istio-">.
        "gateway": {"name": GATEWAY_MONITOR, "namespace": gateway.namespace,
                    "selector": {"istio": gateway.release.removeprefix("istio-")}},
        "ai_gateway": {"name": AI_GATEWAY_MONITOR, "namespace": ENVOY_GATEWAY_NAMESPACE,
                       "selector": dict(AI_GATEWAY_POD_LABELS), "port": AI_GATEWAY_METRICS_PORT,
                       "path": AI_GATEWAY_METRICS_PATH, "tokens_record": TOKENS_RECORD,
                       "tokens_window": TOKENS_WINDOW, "budget_record": BUDGET_RECORD},
        "rules_name": RULES_NAME,
        "gpu_memory_ratio_record": GPU_MEMORY_RATIO_RECORD,
        "thresholds": asdict(thresholds or AlertThresholds()),
        "platform_namespace_regex": platform_namespace_regex(settings),
        "dashboards": [
            {"file": path.name, "configmap": dashboard_configmap_name(path), "json": path.read_text(),
             "labels": {**COMMON_LABELS, "grafana_dashboard": "1"}}
            for path in dashboard_files(settings.root)
        ],
    }}


def pod_label_meta(label: str) -> str:
    """Prometheus' service-discovery name for a pod label: non-alphanumerics become ``_``."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)


def render_monitoring(settings: Settings, *, renderer: Renderer | None = None,
                      templates: Iterable[str] = MONITORING_TEMPLATES, **context: Any) -> list[dict[str, Any]]:
    """Every monitoring object, in apply order."""
    renderer = renderer or Renderer(settings.root / "manifests")
    ctx = manifest_context(settings, **context)
    return [obj for template in templates for obj in renderer.objects(template, **ctx)]


def rule_expressions(objects: Iterable[dict[str, Any]]) -> list[Expression]:
    """Every rule's PromQL, named ``PrometheusRule ns/name group/alert-or-record``."""
    found = []
    for obj in objects:
        if obj.get("kind") != "PrometheusRule":
            continue
        meta = obj["metadata"]
        for group in obj["spec"]["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                found.append(Expression(f"PrometheusRule {meta['namespace']}/{meta['name']} {group['name']}/{name}",
                                        str(rule["expr"])))
    return found


def recorded_names(objects: Iterable[dict[str, Any]]) -> set[str]:
    """The series our recording rules write (queries may use them besides exported metrics):
    those of ``objects`` and the tenants' (TENANT_RECORDS)."""
    return set(TENANT_RECORDS) | {rule["record"] for obj in objects if obj.get("kind") == "PrometheusRule"
                                  for group in obj["spec"]["groups"] for rule in group["rules"] if "record" in rule}
