"""Dashboards as code: the JSON files, their datasource variable and template variables, and
`invoke dashboards` (the Grafana login from the chart's Secret, the port-forwards, what it prints)."""

from __future__ import annotations

import base64
import copy
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from inferbox.config import Settings
from inferbox.errors import InferboxError
from inferbox.k8s import ObjectRef
from inferbox.k8s.portforward import LocalForward, PortInUse
from inferbox.observability.dashboards import (
    DATASOURCE_REF,
    DashboardError,
    ForwardTarget,
    MonitoringNames,
    dashboard_expressions,
    dashboard_problems,
    iter_panels,
    load_dashboard,
    load_dashboards,
    open_dashboards,
    service_backend,
    variables,
)
from inferbox.observability.manifests import platform_namespace_regex


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def dashboards(settings: Settings) -> dict[str, dict[str, Any]]:
    return load_dashboards(settings.root)


# -- the JSON files -------------------------------------------------------------------------------------


def test_the_four_dashboards_parse_and_have_no_problems(dashboards: dict[str, dict[str, Any]]) -> None:
    assert set(dashboards) == {"inference-overview.json", "gpu.json", "platform-health.json", "ai-gateway-usage.json"}
    for name, dashboard in dashboards.items():
        assert dashboard_problems(dashboard, name) == []
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == 4 and all(uid.startswith("inferbox-") for uid in uids)


def test_every_panel_and_query_uses_the_datasource_variable(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, dashboard in dashboards.items():
        [ds] = [v for v in variables(dashboard) if v["name"] == "datasource"]
        assert (ds["type"], ds["query"]) == ("datasource", "prometheus"), name
        panels = list(iter_panels(dashboard))
        assert panels, name
        for panel in panels:
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_REF}, (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": DATASOURCE_REF}, (name, panel["title"])
        for var in variables(dashboard):
            if var["type"] == "query":
                assert var["datasource"] == {"type": "prometheus", "uid": DATASOURCE_REF}


@pytest.mark.parametrize("name", ["inference-overview.json", "gpu.json"])
def test_tenant_and_model_variables_are_label_values_queries(dashboards: dict[str, dict[str, Any]], name: str) -> None:
    found = {v["name"]: v for v in variables(dashboards[name])}
    for var in ("tenant", "model"):
        assert found[var]["type"] == "query"
        assert found[var]["definition"].startswith("label_values(")
        assert found[var]["query"]["query"] == found[var]["definition"]
        assert found[var]["multi"] and found[var]["includeAll"] and found[var]["allValue"] == ".*"
    assert found["model"]["definition"] == 'label_values(up{model!="", tenant=~"$tenant"}, model)'


def test_inference_overview_answers_rate_latency_and_errors_per_tenant_and_model(
        dashboards: dict[str, dict[str, Any]]) -> None:
    exprs = [t["expr"] for p in iter_panels(dashboards["inference-overview.json"]) for t in p["targets"]]
    per_model = [e for e in exprs if "by (tenant, model" in e]
    assert any("rate(istio_requests_total" in e and "response_code" not in e for e in per_model)  # requests/s
    assert any('response_code=~"5.."' in e for e in per_model)  # error ratio
    for quantile in ("0.5", "0.95", "0.99"):  # latency percentiles, Istio and KServe
        assert any(f"histogram_quantile({quantile}, sum by (tenant, model, le) (rate(istio_request_duration" in e
                   for e in exprs)
        assert any(f"histogram_quantile({quantile}, sum by (tenant, model, le) (rate(request_predict_seconds" in e
                   for e in exprs)
    assert all('tenant=~"$tenant"' in e for e in per_model) and all('model=~"$model"' in e for e in per_model)


def test_gpu_dashboard_covers_each_metric_per_gpu_and_per_pod(dashboards: dict[str, dict[str, Any]]) -> None:
    exprs = [t["expr"] for p in iter_panels(dashboards["gpu.json"]) for t in p["targets"]]
    for metric in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_GPU_TEMP",
                   "DCGM_FI_DEV_POWER_USAGE"):
        assert any(metric in e and "by (Hostname, hostname, gpu)" in e for e in exprs), metric
        assert any(metric in e and "by (exported_namespace, exported_pod)" in e for e in exprs), metric


def test_platform_health_watches_every_phase_namespace(dashboards: dict[str, dict[str, Any]],
                                                      settings: Settings) -> None:
    """The JSON is static: when a phase moves to a new namespace this test says to update it."""
    exprs = [t["expr"] for p in iter_panels(dashboards["platform-health.json"]) for t in p["targets"]]
    scoped = [e for e in exprs if "namespace=~" in e]
    assert scoped
    assert all(f'namespace=~"{platform_namespace_regex(settings)}"' in e for e in scoped)
    assert any(e.startswith("sum by (job) (up") for e in exprs)
    assert any("kube_deployment_status_replicas_available" in e for e in exprs)


def test_expressions_come_out_as_plain_promql(dashboards: dict[str, dict[str, Any]]) -> None:
    found = dashboard_expressions(dashboards["inference-overview.json"], "inference-overview.json")
    assert found[0].id == "inference-overview.json variable tenant" and found[0].expr == 'up{model!=""}'
    assert found[1].expr == 'up{model!="", tenant=~".*"}'
    assert all("$" not in e.expr for e in found)
    assert any(e.id == "inference-overview.json panel 1 'Requests/s' A" for e in found)


def test_problems_name_the_panel(dashboards: dict[str, dict[str, Any]]) -> None:
    broken = copy.deepcopy(dashboards["gpu.json"])
    broken["panels"][0]["datasource"] = {"type": "prometheus", "uid": "prometheus"}
    broken["panels"][1]["targets"][0]["datasource"] = None
    broken["templating"]["list"] = [v for v in broken["templating"]["list"] if v["name"] != "datasource"]
    problems = dashboard_problems(broken, "gpu.json")
    assert any(p.startswith("gpu.json: needs a template variable 'datasource'") for p in problems)
    assert any(p.startswith("gpu.json: panel 1 'GPU utilisation per GPU': datasource must be") for p in problems)
    assert any(p.startswith("gpu.json: panel 2 'GPU memory used / free per GPU' target A") for p in problems)


def test_bad_json_and_unknown_queries_are_errors(tmp_path: Path, dashboards: dict[str, dict[str, Any]]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(DashboardError, match=r"bad\.json: not valid JSON"):
        load_dashboard(bad)
    odd = copy.deepcopy(dashboards["gpu.json"])
    odd["templating"]["list"][1]["query"]["query"] = "metrics(DCGM_.*)"
    with pytest.raises(DashboardError, match="cannot tell the PromQL"):
        dashboard_expressions(odd, "gpu.json")


# -- invoke dashboards ---------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _pod(name: str, labels: dict[str, str], *, ready: bool = True, ports: list[dict[str, Any]] | None = None
         ) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "monitoring", "labels": labels},
            "spec": {"containers": [{"name": "main", "ports": ports or []}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


class FakeKube:
    """The two calls open_dashboards makes, answered from dicts shaped like the API's JSON."""

    api_client = None

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.objects = objects
        self.pods = pods
        self.calls: list[str] = []

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        self.calls.append(f"get {ref}")
        return copy.deepcopy(self.objects.get((ref.kind, ref.name)))

    def list(self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]:
        self.calls.append(f"list {kind} {namespace} {label_selector}")
        wanted = dict(kv.split("=") for kv in (label_selector or "").split(",") if kv)
        return [p for p in self.pods if wanted.items() <= p["metadata"]["labels"].items()]


@pytest.fixture
def kube() -> FakeKube:
    # As kube-prometheus-stack's charts make them: Grafana's service port 80 -> named container port,
    # Prometheus' 9090 -> 9090, and the admin Secret generated by the Grafana chart.
    objects = {
        ("Secret", "kube-prometheus-stack-grafana"): {
            "data": {"admin-user": _b64("admin"), "admin-password": _b64("Zq8[generated]Xy"), "ldap-toml": ""}},
        ("Service", "kube-prometheus-stack-grafana"): {"spec": {
            "selector": {"app.kubernetes.io/name": "grafana"},
            "ports": [{"name": "http-web", "port": 80, "targetPort": "grafana"}]}},
        ("Service", "kube-prometheus-stack-prometheus"): {"spec": {
            "selector": {"app.kubernetes.io/name": "prometheus"},
            "ports": [{"name": "http-web", "port": 9090, "targetPort": 9090},
                      {"name": "reloader-web", "port": 8080, "targetPort": "reloader-web"}]}},
    }
    pods = [_pod("grafana-0", {"app.kubernetes.io/name": "grafana"}, ready=False),
            _pod("grafana-1", {"app.kubernetes.io/name": "grafana"},
                 ports=[{"name": "grafana", "containerPort": 3000}]),
            _pod("prometheus-0", {"app.kubernetes.io/name": "prometheus"})]
    return FakeKube(objects, pods)


class FakeForward:
    def __init__(self, log: list[str], target: ForwardTarget) -> None:
        self.log = log
        self.target = target
        self.port: int | None = None

    def start(self) -> int:
        self.port = self.target.local_port or 40000 + len(self.log)
        self.log.append(f"start {self.target.namespace}/{self.target.pod}:{self.target.port} on {self.port}")
        return self.port

    def close(self) -> None:
        self.log.append(f"close {self.target.pod}")


def test_open_dashboards_prints_urls_and_the_generated_login(settings: Settings, kube: FakeKube) -> None:
    out = io.StringIO()
    log: list[str] = []
    session = open_dashboards(settings, Console(file=out, width=200), grafana_port=3000, prometheus_port=0,
                              kube=kube, forward=lambda _kube, target: FakeForward(log, target), wait=False)  # type: ignore[arg-type]
    assert log == ["start monitoring/grafana-1:3000 on 3000", "start monitoring/prometheus-0:9090 on 40001"]
    text = out.getvalue()
    assert "http://127.0.0.1:3000/d/inferbox-inference" in text
    assert "http://127.0.0.1:3000/d/inferbox-gpu" in text and "http://127.0.0.1:3000/d/inferbox-platform" in text
    assert "http://127.0.0.1:40001/alerts" in text
    assert "admin / Zq8[generated]Xy" in text  # rich markup in a password is printed, not interpreted
    assert "prom-operator" not in text  # the chart's old default password is never assumed
    assert session.login.password == "Zq8[generated]Xy" and "Zq8" not in repr(session.login)
    session.close()
    assert log[-2:] == ["close grafana-1", "close prometheus-0"]


def test_open_dashboards_waits_until_stopped(settings: Settings, kube: FakeKube) -> None:
    log: list[str] = []
    stop = threading.Event()
    stop.set()
    open_dashboards(settings, Console(file=io.StringIO()), kube=kube,  # type: ignore[arg-type]
                    forward=lambda _kube, target: FakeForward(log, target), stop=stop)
    assert log[-2:] == ["close grafana-1", "close prometheus-0"]


def test_missing_secret_is_an_error_not_a_default(settings: Settings, kube: FakeKube) -> None:
    del kube.objects[("Secret", "kube-prometheus-stack-grafana")]
    with pytest.raises(InferboxError, match="Grafana's admin Secret monitoring/kube-prometheus-stack-grafana"):
        open_dashboards(settings, Console(file=io.StringIO()), kube=kube, wait=False)  # type: ignore[arg-type]
    kube.objects[("Secret", "kube-prometheus-stack-grafana")] = {"data": {"admin-user": _b64("admin")}}
    with pytest.raises(InferboxError, match="no 'admin-password' key"):
        open_dashboards(settings, Console(file=io.StringIO()), kube=kube, wait=False)  # type: ignore[arg-type]


def test_no_ready_pod_is_an_error(kube: FakeKube) -> None:
    kube.pods = [p for p in kube.pods if p["metadata"]["name"] != "grafana-1"]
    with pytest.raises(InferboxError, match="no ready pod behind service monitoring/kube-prometheus-stack-grafana"):
        service_backend(kube, "monitoring", "kube-prometheus-stack-grafana", 80)  # type: ignore[arg-type]


def test_names_come_from_the_monitoring_phase(settings: Settings) -> None:
    names = MonitoringNames.for_settings(settings)
    assert (names.namespace, names.grafana_service, names.grafana_secret, names.prometheus_service) == (
        "monitoring", "kube-prometheus-stack-grafana", "kube-prometheus-stack-grafana",
        "kube-prometheus-stack-prometheus")


# -- the local end of a port-forward, with real sockets ----------------------------------------------


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP server answering each connection with b"echo:" + what it received until EOF."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                received = b""
                while chunk := conn.recv(65536):
                    received += chunk
                conn.sendall(b"echo:" + received)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    server.close()


def test_local_forward_relays_both_ways(echo_server: int) -> None:
    opened: list[str] = []

    def connect() -> tuple[socket.socket, Callable[[], None]]:
        remote = socket.create_connection(("127.0.0.1", echo_server))
        opened.append("tunnel")
        return remote, lambda: opened.append("closed")

    with LocalForward(connect, local_port=0, name="echo") as forward:
        assert forward.url.startswith("http://127.0.0.1:")
        for payload in (b"hello", json.dumps({"big": "x" * 300_000}).encode()):
            with socket.create_connection(("127.0.0.1", forward.port)) as client:
                client.sendall(payload)
                client.shutdown(socket.SHUT_WR)
                answer = b""
                while chunk := client.recv(65536):
                    answer += chunk
            assert answer == b"echo:" + payload
    assert opened.count("tunnel") == 2


def test_taken_local_port_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        forward = LocalForward(lambda: (None, lambda: None), local_port=port, name="grafana")
        with pytest.raises(PortInUse, match=f"cannot listen on 127.0.0.1:{port} for grafana"):
            forward.start()
