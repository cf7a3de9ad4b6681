"""`invoke dashboards` with Jaeger and Kiali: forwarded where installed (each a Service with a ready
pod behind it), named as missing otherwise, Kiali's URL under /kiali and its login token from a
TokenRequest for its ServiceAccount, with the kubectl command that makes another. The API server
is played by dicts shaped like its JSON; the forwards are recorded, not opened."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console

from inferbox.config import Settings
from inferbox.errors import Forbidden
from inferbox.k8s import ObjectRef
from inferbox.observability.dashboards import ForwardTarget, open_dashboards, service_account_token


def _pod(name: str, labels: dict[str, str], ports: list[dict[str, Any]] | None = None,
         ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "main", "ports": ports or []}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


class TokenApi:
    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube

    def create(self, *, body: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
        self.kube.token_requests.append((namespace, name, body))
        if self.kube.token_error is not None:
            raise self.kube.token_error
        return {"status": {"token": "eyJ.kiali[token]", "expirationTimestamp": "2026-01-01T01:00:00Z"}}


class Resource:
    def __init__(self, kube: FakeKube) -> None:
        self.subresources = {"token": TokenApi(kube)}


class FakeKube:
    """get, list, and the TokenRequest, as open_dashboards uses them."""

    api_client = None

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {
            ("Secret", "monitoring", "kube-prometheus-stack-grafana"): {
                "data": {"admin-user": "YWRtaW4=", "admin-password": "cHc="}},
            ("Service", "monitoring", "kube-prometheus-stack-grafana"): {"spec": {
                "selector": {"app": "grafana"}, "ports": [{"port": 80, "targetPort": 3000}]}},
            ("Service", "monitoring", "kube-prometheus-stack-prometheus"): {"spec": {
                "selector": {"app": "prometheus"}, "ports": [{"port": 9090, "targetPort": 9090}]}},
            # As the jaeger chart makes it: the query UI among other ports.
            ("Service", "tracing", "jaeger"): {"spec": {"selector": {"app": "jaeger"}, "ports": [
                {"name": "grpc-otlp", "port": 4317, "targetPort": 4317},
                {"name": "http-query", "port": 16686, "targetPort": 16686}]}},
            # As kiali-server makes it: port 20001 named http -> the container's api-port.
            ("Service", "istio-system", "kiali"): {"spec": {"selector": {"app": "kiali"}, "ports": [
                {"name": "http", "port": 20001, "targetPort": "api-port"}]}},
        }
        self.pods = {"monitoring": [_pod("grafana-0", {"app": "grafana"}), _pod("prometheus-0", {"app": "prometheus"})],
                     "tracing": [_pod("jaeger-0", {"app": "jaeger"})],
                     "istio-system": [_pod("kiali-0", {"app": "kiali"}, [{"name": "api-port",
                                                                          "containerPort": 20001}])]}
        self.token_requests: list[tuple[str, str, dict[str, Any]]] = []
        self.token_error: Exception | None = None

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((ref.kind, ref.namespace or "", ref.name)))

    def list(self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]:
        wanted = dict(kv.split("=") for kv in (label_selector or "").split(",") if kv)
        return [p for p in self.pods.get(namespace or "", []) if wanted.items() <= p["metadata"]["labels"].items()]

    def resource(self, api_version: str, kind: str) -> Resource:
        assert (api_version, kind) == ("v1", "ServiceAccount")
        return Resource(self)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


class FakeForward:
    def __init__(self, log: list[str], target: ForwardTarget) -> None:
        self.log, self.target, self.port = log, target, None

    def start(self) -> int:
        self.port = self.target.local_port or 41000 + len(self.log)
        self.log.append(f"{self.target.name} {self.target.namespace}/{self.target.pod}:{self.target.port} "
                        f"on {self.port}")
        return self.port

    def close(self) -> None:
        self.log.append(f"close {self.target.name}")


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def run(settings: Settings, kube: FakeKube, **ports: int) -> tuple[Any, list[str], str]:
    out, log = io.StringIO(), []
    session = open_dashboards(settings, Console(file=out, width=300), kube=kube, wait=False,  # type: ignore[arg-type]
                              forward=lambda _kube, target: FakeForward(log, target), **ports)
    return session, log, out.getvalue()


def test_jaeger_and_kiali_are_forwarded_with_a_kiali_token(settings: Settings) -> None:
    kube = FakeKube()
    session, log, text = run(settings, kube, prometheus_port=0)
    assert log == ["grafana monitoring/grafana-0:3000 on 3000", "prometheus monitoring/prometheus-0:9090 on 41001",
                   "jaeger tracing/jaeger-0:16686 on 16686", "kiali istio-system/kiali-0:20001 on 20001"]
    assert session.jaeger_url == "http://127.0.0.1:16686" and session.kiali_url == "http://127.0.0.1:20001/kiali"
    assert "http://127.0.0.1:16686/search" in text and "http://127.0.0.1:20001/kiali" in text
    # The token: a TokenRequest for the kiali ServiceAccount, printed (markup in it printed as is).
    [(namespace, name, body)] = kube.token_requests
    assert (namespace, name, body["kind"], body["spec"]["expirationSeconds"]) == (
        "istio-system", "kiali", "TokenRequest", 3600)
    assert session.kiali_token == "eyJ.kiali[token]" and "eyJ.kiali[token]" not in repr(session)
    assert "Kiali login (token): paste eyJ.kiali[token]" in text
    assert f"kubectl --context {settings.kube_context} -n istio-system create token kiali" in text
    session.close()
    assert log[-4:] == ["close grafana", "close prometheus", "close jaeger", "close kiali"]


def test_free_ports_when_asked(settings: Settings) -> None:
    session, _, _ = run(settings, FakeKube(), jaeger_port=0, kiali_port=0)
    assert session.jaeger_url == "http://127.0.0.1:41002" and session.kiali_url == "http://127.0.0.1:41003/kiali"


def test_not_installed_ones_are_named_not_fatal(settings: Settings) -> None:
    kube = FakeKube()
    del kube.objects[("Service", "tracing", "jaeger")]
    del kube.objects[("Service", "istio-system", "kiali")]
    session, log, text = run(settings, kube)
    assert [line.split()[0] for line in log] == ["grafana", "prometheus"]
    assert session.jaeger_url is None and session.kiali_url is None and not kube.token_requests
    assert "not installed (no service tracing/jaeger: phase tracing" in text
    assert "not installed (no service istio-system/kiali: phase kiali" in text
    assert "Kiali login" not in text


def test_a_kiali_without_a_ready_pod_is_skipped_saying_so(settings: Settings) -> None:
    kube = FakeKube()
    kube.pods["istio-system"] = [_pod("kiali-0", {"app": "kiali"}, ready=False)]
    session, _, text = run(settings, kube)
    assert session.kiali_url is None and session.jaeger_url is not None
    assert "no ready pod behind service istio-system/kiali" in text


def test_a_refused_token_request_prints_the_command(settings: Settings) -> None:
    kube = FakeKube()
    kube.token_error = Forbidden("create token for serviceaccount istio-system/kiali: 403 Forbidden", status=403)
    session, _, text = run(settings, kube)
    assert session.kiali_token is None and session.kiali_url is not None
    assert (f"Kiali login (token): make one with kubectl --context {settings.kube_context} -n istio-system "
            "create token kiali and paste it (the TokenRequest failed: ") in text


def test_service_account_token_reads_the_status() -> None:
    kube = FakeKube()
    assert service_account_token(kube, "istio-system", "kiali", expiration_s=600) == "eyJ.kiali[token]"  # type: ignore[arg-type]
    assert kube.token_requests[0][2]["spec"]["expirationSeconds"] == 600
