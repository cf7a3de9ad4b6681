"""The monitoring objects: rendered (goldens), valid against the prometheus-operator CRD schemas,
aligned with the tenants' network policies, and applied by the monitoring phase in a dry run."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferbox.bootstrap.install import DryRunWaiter, PhaseInstaller
from inferbox.bootstrap.phases import build_plan
from inferbox.config import Settings
from inferbox.events import EventLog
from inferbox.observability.manifests import (
    ISVC_LABEL,
    MONITORING_TEMPLATES,
    AlertThresholds,
    dashboard_files,
    manifest_context,
    monitoring_namespace,
    platform_namespaces,
    render_monitoring,
)
from inferbox.render import Renderer
from inferbox.runner import RecordingRunner
from inferbox.tools.helm import Helm
from inferbox.validate import SchemaValidationError, SchemaValidator


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def objects(settings: Settings) -> list[dict[str, Any]]:
    return render_monitoring(settings)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


class _GoldenDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, long lines unwrapped: goldens read like the templates."""


_GoldenDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def dump(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_GoldenDumper, sort_keys=False, width=1000)


@pytest.fixture
def validator(settings: Settings, upstream_crds_dir: Path) -> SchemaValidator:
    return SchemaValidator(settings.versions.kubernetes.version, [upstream_crds_dir])


# -- goldens ------------------------------------------------------------------------------------------


def test_monitors_golden(settings: Settings, golden: Callable[[str, str], None]) -> None:
    golden("observability/monitors.yaml", dump(render_monitoring(settings, templates=[MONITORING_TEMPLATES[0]])))


def test_monitors_for_listed_tenants_golden(settings: Settings, golden: Callable[[str, str], None]) -> None:
    objects = render_monitoring(settings, templates=[MONITORING_TEMPLATES[0]],
                                predictor_namespaces=["tenant-a", "tenant-c"])
    golden("observability/monitors-listed-tenants.yaml", dump(objects))


def test_rules_golden(settings: Settings, golden: Callable[[str, str], None]) -> None:
    golden("observability/rules.yaml", dump(render_monitoring(settings, templates=[MONITORING_TEMPLATES[1]])))


def test_rules_with_other_thresholds_golden(settings: Settings, golden: Callable[[str, str], None]) -> None:
    thresholds = AlertThresholds(p95_latency_ms=250, error_ratio=0.01, gpu_memory_ratio=0.8, slo_for="5m")
    objects = render_monitoring(settings, templates=[MONITORING_TEMPLATES[1]], thresholds=thresholds)
    golden("observability/rules-strict-slo.yaml", dump(objects))


# -- what the objects say -------------------------------------------------------------------------------


def test_objects_go_to_the_monitoring_phase_namespace(objects: list[dict[str, Any]], settings: Settings) -> None:
    assert {o["metadata"]["namespace"] for o in objects} == {monitoring_namespace(settings)} == {"monitoring"}
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("PodMonitor", "kserve-predictors"), ("PodMonitor", "istio-ingressgateway"), ("PodMonitor", "ai-gateway"),
        ("PrometheusRule", "inferbox-alerts"), ("ConfigMap", "inferbox-dashboard-ai-gateway-usage"),
        ("ConfigMap", "inferbox-dashboard-gpu"),
        ("ConfigMap", "inferbox-dashboard-inference-overview"), ("ConfigMap", "inferbox-dashboard-platform-health")]
    assert all(o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "inferbox" for o in objects)


def test_predictor_monitor_labels_tenant_and_model(objects: list[dict[str, Any]]) -> None:
    spec = by_kind(objects, "PodMonitor")["kserve-predictors"]["spec"]
    assert spec["namespaceSelector"] == {"any": True}
    assert spec["selector"] == {"matchExpressions": [{"key": ISVC_LABEL, "operator": "Exists"}]}
    [endpoint] = spec["podMetricsEndpoints"]
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["tenant"]["sourceLabels"] == ["__meta_kubernetes_namespace"]
    assert relabel["model"]["sourceLabels"] == ["__meta_kubernetes_pod_label_serving_kserve_io_inferenceservice"]
    # The declared Envoy port selects one target per pod; its address is moved to the agent's 15020.
    assert endpoint["port"] == "http-envoy-prom" and endpoint["path"] == "/stats/prometheus"
    rewrite = relabel["__address__"]
    for address, expected in (("10.244.1.7:15090", "10.244.1.7:15020"), ("[fd00::7]:15090", "[fd00::7]:15020")):
        match = re.fullmatch(rewrite["regex"], address)
        assert match is not None
        assert rewrite["replacement"].replace("${1}", match.group(1)) == expected


def test_gateway_monitor_selects_the_gateway_release(objects: list[dict[str, Any]], settings: Settings) -> None:
    gateway = next(p for p in build_plan(settings, gpu=False).phases if p.name == "istio-ingressgateway")
    spec = by_kind(objects, "PodMonitor")["istio-ingressgateway"]["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [gateway.namespace]} == {"matchNames": ["istio-ingress"]}
    # The istio/gateway chart labels its pods istio=<release name without "istio-">.
    assert spec["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
    assert spec["podMetricsEndpoints"][0]["relabelings"][0]["replacement"] == "${1}:15020"


def test_scrape_port_is_one_the_tenant_network_policy_opens(objects: list[dict[str, Any]], settings: Settings) -> None:
    """manifests/tenant/ lets the monitoring namespace in on 15020 (and 8080/8082): we scrape 15020."""
    policies = Renderer(settings.root / "manifests").objects("tenant/networkpolicies.yaml.j2", tenant={"name": "t"},
                                                                      knative=False, ai=None)
    allow = next(p for p in policies if p["metadata"]["name"] == "allow-monitoring")
    [rule] = allow["spec"]["ingress"]
    sources = [f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for f in rule["from"]]
    assert sources == [monitoring_namespace(settings)]
    opened = {p["port"] for p in rule["ports"]}
    scraped = {int(r["replacement"].rsplit(":", 1)[1]) for r in
               by_kind(objects, "PodMonitor")["kserve-predictors"]["spec"]["podMetricsEndpoints"][0]["relabelings"]
               if r["targetLabel"] == "__address__"}
    assert scraped == {15020} and scraped <= opened


def test_every_alert_has_severity_summary_description_and_a_one_line_runbook(objects: list[dict[str, Any]]) -> None:
    rule = by_kind(objects, "PrometheusRule")["inferbox-alerts"]
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert {a["alert"] for a in alerts} == {
        "InferenceLatencyP95High", "InferenceErrorRatioHigh", "PredictorMetricsDown", "PredictorRestarting",
        "GPUMemoryNearlyFull", "PlatformTargetDown", "PlatformDeploymentUnavailable", "PlatformDaemonSetNotReady",
        "TenantTokenBudgetBurn"}
    for alert in alerts:
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        notes = alert["annotations"]
        assert set(notes) == {"summary", "description", "runbook"}, alert["alert"]
        assert all(notes[k].strip() and "\n" not in notes[k] for k in notes), alert["alert"]


def test_platform_rules_cover_every_phase_namespace(objects: list[dict[str, Any]], settings: Settings) -> None:
    rule = by_kind(objects, "PrometheusRule")["inferbox-alerts"]
    platform = next(g for g in rule["spec"]["groups"] if g["name"] == "inferbox.platform")
    regex = "|".join(platform_namespaces(settings))
    assert all(f'namespace=~"{regex}"' in r["expr"] for r in platform["rules"])
    phases = {p.namespace for p in build_plan(replace(settings, knative=True), gpu=True).phases}
    assert phases <= set(regex.split("|"))
    assert "knative-serving" in regex.split("|")  # where the KnativeServing CR runs its deployments


def test_thresholds_reach_the_rules(settings: Settings) -> None:
    objects = render_monitoring(settings, thresholds=AlertThresholds(p95_latency_ms=250, error_ratio=0.01))
    exprs = {r["alert"]: r["expr"] for g in by_kind(objects, "PrometheusRule")["inferbox-alerts"]["spec"]["groups"]
             for r in g["rules"] if "alert" in r}
    assert exprs["InferenceLatencyP95High"].endswith("> 250")
    assert exprs["InferenceErrorRatioHigh"].endswith("> 0.01")


def test_dashboard_configmaps_carry_the_files_verbatim(objects: list[dict[str, Any]], settings: Settings) -> None:
    configmaps = by_kind(objects, "ConfigMap")
    files = dashboard_files(settings.root)
    assert len(configmaps) == len(files) == 4
    for path in files:
        cm = configmaps[f"inferbox-dashboard-{path.stem}"]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"  # Grafana's sidecar label (monitoring.yaml)
        assert cm["data"] == {path.name: path.read_text()}


def test_sidecar_label_matches_the_monitoring_values(objects: list[dict[str, Any]], settings: Settings) -> None:
    values = yaml.safe_load((settings.root / "helm-values" / "monitoring.yaml").read_text())
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    for cm in by_kind(objects, "ConfigMap").values():
        assert cm["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    assert sidecar["searchNamespace"] == "ALL"


# -- schemas --------------------------------------------------------------------------------------------


def test_objects_match_the_prometheus_operator_crd_schemas(objects: list[dict[str, Any]],
                                                           validator: SchemaValidator) -> None:
    report = validator.validate(objects, require_all=True)
    assert sorted(report.checked.values()).count("CRD monitoring.coreos.com/v1 PodMonitor") == 3
    assert "CRD monitoring.coreos.com/v1 PrometheusRule" in report.checked.values()


@pytest.mark.parametrize(("path", "value", "message"), [
    (("spec", "podMetricsEndpoints", 0, "relabelings", 0, "action"), "explode", "is not one of"),
    (("spec", "podMetricsEndpoints", 0, "scrapeInterval"), "30s", "Additional properties"),
])
def test_schema_catches_a_broken_monitor(objects: list[dict[str, Any]], validator: SchemaValidator,
                                         path: tuple[Any, ...], value: str, message: str) -> None:
    monitor = yaml.safe_load(yaml.safe_dump(by_kind(objects, "PodMonitor")["kserve-predictors"]))
    node = monitor
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(SchemaValidationError, match=message):
        validator.validate([monitor])


def test_schema_catches_a_broken_rule(objects: list[dict[str, Any]], validator: SchemaValidator) -> None:
    rule = yaml.safe_load(yaml.safe_dump(by_kind(objects, "PrometheusRule")["inferbox-alerts"]))
    rule["spec"]["groups"][1]["rules"][0]["for"] = "ten minutes"
    with pytest.raises(SchemaValidationError, match="for"):
        validator.validate([rule])


# -- the install plan ----------------------------------------------------------------------------------


def test_monitoring_phase_applies_the_templates(settings: Settings) -> None:
    """With MONITORING_TEMPLATES in the phase's manifests (the proposed phases.py change) and this
    context merged into the installer's, a dry run applies every object after the chart."""
    plan = build_plan(settings, gpu=False)
    phase = replace(next(p for p in plan.phases if p.name == "monitoring"), manifests=MONITORING_TEMPLATES)
    runner = RecordingRunner()
    installer = PhaseInstaller(helm=Helm(runner), waiter=DryRunWaiter(runner),
                               renderer=Renderer(settings.root / "manifests"), events=EventLog(),
                               manifest_context={"serving_version": settings.versions.knative.serving_version,
                                                 **manifest_context(settings)},
                               note=runner.note)
    installer.install(phase)
    lines = runner.lines()
    applied = [line for line in lines if line.startswith("# apply (server-side")]
    assert [line.rsplit(": ", 1)[1] for line in applied] == [
        "PodMonitor monitoring/kserve-predictors", "PodMonitor monitoring/istio-ingressgateway",
        "PodMonitor monitoring/ai-gateway", "PrometheusRule monitoring/inferbox-alerts",
        "ConfigMap monitoring/inferbox-dashboard-ai-gateway-usage", "ConfigMap monitoring/inferbox-dashboard-gpu",
        "ConfigMap monitoring/inferbox-dashboard-inference-overview",
        "ConfigMap monitoring/inferbox-dashboard-platform-health"]
    helm_at = next(i for i, line in enumerate(lines) if "helm upgrade --install kube-prometheus-stack" in line)
    assert helm_at < lines.index(applied[0])  # after the chart (and its CRDs)


def test_templates_have_no_stray_context(settings: Settings) -> None:
    """Rendering is strict: each template needs only the ``observability`` key."""
    renderer = Renderer(settings.root / "manifests")
    context = manifest_context(settings)
    assert set(context) == {"observability"}
    for template in MONITORING_TEMPLATES:
        assert renderer.objects(template, **context)


def test_monitoring_phase_declares_the_templates(settings: Settings) -> None:
    phase = next(p for p in build_plan(settings, gpu=False).phases if p.name == "monitoring")
    assert phase.manifests == MONITORING_TEMPLATES, (
        "inferbox/bootstrap/phases.py: the monitoring phase needs manifests=" + repr(MONITORING_TEMPLATES))
