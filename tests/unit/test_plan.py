"""The install plan: ordering, parallel waves, optional phases, critical path, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from inferbox.bootstrap.phases import build_plan
from inferbox.bootstrap.plan import ClusterStep, Phase, Plan
from inferbox.errors import PlanError
from inferbox.tools.helm import ChartSource


def names(wave: list[Phase]) -> set[str]:
    return {p.name for p in wave}


def test_core_order_cert_manager_istio_kserve(make_settings) -> None:
    plan = build_plan(make_settings(), gpu=False)
    order = [p.name for p in plan.order()]
    assert order.index("cert-manager") < order.index("istio-base") < order.index("istio-cni") < order.index("istiod")
    assert order.index("istiod") < order.index("kserve-crd") < order.index("kserve") < order.index("kserve-runtimes")
    assert order.index("istiod") < order.index("istio-ingressgateway")


def test_waves_group_independent_phases(make_settings) -> None:
    waves = build_plan(make_settings(), gpu=True).waves()
    assert names(waves[0]) == {"cert-manager", "monitoring", "gpu-device-plugin"}
    assert names(waves[1]) == {"istio-base", "dcgm-exporter"}
    assert names(waves[2]) == {"istio-cni"}
    assert names(waves[3]) == {"istiod"}
    # The AI gateway's Envoy proxies carry an Istio sidecar, and Jaeger is the mesh's tracing
    # provider: both start once istiod answers, beside the ingress gateway.
    assert names(waves[4]) == {"istio-ingressgateway", "kserve-crd", "envoy-gateway", "tracing"}
    assert names(waves[5]) == {"kserve", "ai-gateway-crds", "kiali"}
    assert names(waves[6]) == {"kserve-runtimes", "ai-gateway"}
    without = build_plan(make_settings(ai_gateway=False, monitoring=False), gpu=False).waves()
    assert names(without[-1]) == {"kserve-runtimes"} and not {"envoy-gateway", "tracing", "kiali"} & {
        p.name for wave in without for p in wave}


def test_every_phase_depends_only_on_earlier_waves(make_settings) -> None:
    plan = build_plan(make_settings(knative=True), gpu=True)
    seen: set[str] = set()
    for wave in plan.waves():
        for phase in wave:
            assert set(phase.depends_on) <= seen, phase.name
        seen |= names(wave)


def test_optional_phases(make_settings) -> None:
    minimal = {p.name for p in build_plan(make_settings(monitoring=False), gpu=False).phases}
    assert minimal.isdisjoint({"monitoring", "gpu-device-plugin", "dcgm-exporter", "knative-serving"})
    full = build_plan(make_settings(knative=True), gpu=True)
    assert "knative-serving" in full.phase("kserve").depends_on
    assert full.phase("kserve").set_values["kserve.controller.deploymentMode"] == "Knative"
    assert build_plan(make_settings(), gpu=False).phase("kserve").set_values[
        "kserve.controller.deploymentMode"] == "Standard"
    # Without monitoring, DCGM exporter must not ask for a ServiceMonitor (no CRD for it).
    gpu_only = build_plan(make_settings(monitoring=False), gpu=True).phase("dcgm-exporter")
    assert gpu_only.depends_on == ("gpu-device-plugin",)
    assert gpu_only.values()["serviceMonitor"]["enabled"] is False


def test_versions_come_from_versions_toml(make_settings) -> None:
    settings = make_settings()
    plan = build_plan(settings, gpu=True)
    for phase in plan.phases:
        pin = settings.versions.charts.by_key(phase.chart_key)
        assert phase.chart.version == pin.version == phase.chart_version
        assert phase.chart.chart == pin.chart


def test_every_shipped_values_file_is_used_and_parses(make_settings, root: Path) -> None:
    plan = build_plan(make_settings(knative=True), gpu=True)
    used = {p.values_file for p in plan.phases}
    for path in sorted((root / "helm-values").glob("*.yaml")):
        assert path in used, f"{path.name} belongs to no phase"
        assert isinstance(yaml.safe_load(path.read_text()), dict)


def test_critical_path_and_json(make_settings, root: Path) -> None:
    plan = build_plan(make_settings(), gpu=False)
    total, path = plan.critical_path()
    assert path == ["cert-manager", "istio-base", "istio-cni", "istiod", "envoy-gateway", "ai-gateway-crds",
                    "ai-gateway"]
    assert total == sum(plan.phase(n).expected_s for n in path)
    assert total < sum(p.expected_s for p in plan.phases)
    data = json.loads(json.dumps(plan.to_dict(root)))
    assert data["waves"][0] == [p.name for p in plan.waves()[0]]
    cert = next(p for p in data["phases"] if p["name"] == "cert-manager")
    assert cert["values_file"] == "helm-values/cert-manager.yaml"
    assert cert["chart"]["version"] == plan.phase("cert-manager").chart_version
    assert any("webhook" in c["kind"] for c in cert["checks"])
    # Measured durations replace the estimates.
    assert plan.critical_path({"monitoring": 10_000})[1] == ["monitoring", "kiali"]


def _phase(name: str, *deps: str) -> Phase:
    return Phase(name=name, release=name, namespace="ns", chart_key=name, chart=ChartSource(name, "1.0.0"),
                 chart_name=name, chart_version="1.0.0", values_file=None, depends_on=deps)


CLUSTER = ClusterStep("kind", "x", "kind-x", "img", gpu=False)


def test_cycle_and_unknown_dependency_are_refused() -> None:
    with pytest.raises(PlanError, match="cycle"):
        Plan(CLUSTER, (_phase("a", "b"), _phase("b", "a")))
    with pytest.raises(PlanError, match="unknown phase"):
        Plan(CLUSTER, (_phase("a", "nope"),))
    with pytest.raises(PlanError, match="duplicate"):
        Plan(CLUSTER, (_phase("a"), _phase("a")))
