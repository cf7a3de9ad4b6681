"""`invoke predict --target cluster`: requests, Host routing and the bearer token, against a real
HTTP server on loopback standing in for the Istio ingress gateway."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inferbox import PROJECT_ROOT
from inferbox.local.client import PredictError
from inferbox.models import gateway
from inferbox.models.catalog import load_catalog

CATALOG = load_catalog(PROJECT_ROOT / "models" / "catalog.yaml")
HOST = "sklearn-iris-tenant-a.example.com"


class FakeGateway(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str, dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.headers["Host"], self.headers["Authorization"], self.path, body))
        # Like Istio's RequestAuthentication + AuthorizationPolicy: no valid token, no entry.
        status = 200 if self.headers["Authorization"] == "Bearer good" and self.headers["Host"] == HOST else 403
        payload = json.dumps({"predictions": [1, 1]} if status == 200 else {"error": "RBAC: access denied"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway_port() -> Iterator[int]:
    FakeGateway.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_requests_follow_the_runtimes_protocols() -> None:
    iris = gateway.requests_for(CATALOG.get("sklearn-iris"), None)
    assert [(p, path) for p, path, _ in iris] == [("v1", "/v1/models/sklearn-iris:predict"),
                                                   ("v2", "/v2/models/sklearn-iris/infer")]
    assert iris[0][2] == {"instances": CATALOG.get("sklearn-iris").example.instances}
    chat = gateway.requests_for(CATALOG.get("qwen-small"), None)
    assert ("openai", "/openai/v1/chat/completions") in [(p, path) for p, path, _ in chat]


def test_call_sends_host_and_token(gateway_port: int) -> None:
    calls = gateway.requests_for(CATALOG.get("sklearn-iris"), [[6.8, 2.8, 4.8, 1.4]])
    answers = gateway.call(gateway_port, HOST, "good", calls)
    assert [a.answer.body for a in answers] == [{"predictions": [1, 1]}] * 2
    assert {(host, auth) for host, auth, _, _ in FakeGateway.seen} == {(HOST, "Bearer good")}


def test_refusal_names_the_status_and_the_likely_cause(gateway_port: int) -> None:
    calls = gateway.requests_for(CATALOG.get("sklearn-iris"), None)
    with pytest.raises(PredictError, match=r"HTTP 403 \(the tenant's AuthorizationPolicy refused this caller\)"):
        gateway.call(gateway_port, HOST, "stolen", calls)
