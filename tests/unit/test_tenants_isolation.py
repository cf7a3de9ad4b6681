"""verify-isolation's tokens: each bad token is bad for exactly the stated reason.

The end-to-end check (the statuses the mesh answers) needs kind + Istio + KServe; here joserfc
verifies each token the way the sidecar's RequestAuthentication + AuthorizationPolicy would.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from joserfc import errors, jwt

from inferbox.tenants import isolation
from inferbox.tenants.keys import KeyStore, verify_token

# What joserfc raises for each flaw: the reason the sidecar refuses the token.
EXPECTED_ERROR = {
    "expired": errors.ExpiredTokenError,
    "audience": errors.InvalidClaimError,
    "signature": errors.BadSignatureError,
    "algorithm": errors.UnsupportedAlgorithmError,
    "unknown-key": errors.InvalidKeyIdError,
    "tenant": errors.InvalidClaimError,
}


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    keys = KeyStore(tmp_path / "keys")
    keys.ensure()
    return keys


@pytest.fixture
def cases(store: KeyStore) -> list[isolation.Case]:
    return isolation.craft_cases(store, tenant="tenant-a", other_tenant="tenant-b", subject="iris-web")


def test_cases_and_expected_statuses(cases: list[isolation.Case]) -> None:
    assert [(c.flaw, c.expected) for c in cases] == [
        ("missing", 403), ("expired", 401), ("audience", 401), ("signature", 401), ("algorithm", 401),
        ("unknown-key", 401), ("tenant", 403), ("none", 200)]


def test_each_bad_token_fails_for_its_reason(store: KeyStore, cases: list[isolation.Case]) -> None:
    for case in cases:
        if case.token is None:
            continue
        if case.flaw == "none":
            assert verify_token(store, case.token, tenant="tenant-a")["sub"] == "iris-web"
            continue
        with pytest.raises(EXPECTED_ERROR[case.flaw]) as err:
            verify_token(store, case.token, tenant="tenant-a")
        if isinstance(err.value, errors.InvalidClaimError):
            assert err.value.claim == {"audience": "aud", "tenant": "tenant"}[case.flaw]


def test_bad_tokens_differ_from_the_valid_one_only_in_their_flaw(store: KeyStore,
                                                                 cases: list[isolation.Case]) -> None:
    by_flaw = {c.flaw: c for c in cases}
    valid = jwt.decode(by_flaw["none"].token or "", store.verification_keys()).claims
    # The expired token is correctly signed: it fails on time alone.
    expired = jwt.decode(by_flaw["expired"].token or "", store.verification_keys()).claims
    assert {k: v for k, v in expired.items() if k not in ("iat", "nbf", "exp", "jti")} == \
        {k: v for k, v in valid.items() if k not in ("iat", "nbf", "exp", "jti")}
    # The other tenant's token is a perfectly valid token, for the wrong tenant, by an allowed subject.
    other = jwt.decode(by_flaw["tenant"].token or "", store.verification_keys()).claims
    assert other["tenant"] == "tenant-b" and other["sub"] == valid["sub"]
    # The tampered token carries the valid token's header and claims; only the signature changed.
    tampered, original = (by_flaw["signature"].token or "").split("."), (by_flaw["none"].token or "").split(".")
    assert tampered[:2] == original[:2] and tampered[2] != original[2]
    assert (by_flaw["algorithm"].token or "").endswith(".")  # alg none: an empty signature


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        _Recorder.seen.append({"host": self.headers["Host"], "auth": self.headers.get("Authorization", ""),
                               "body": self.rfile.read(length).decode(), "path": self.path})
        status = 200 if self.headers.get("Authorization") else 403
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"RBAC: access denied" if status == 403 else b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_probe_sends_host_token_and_body(server: str, cases: list[isolation.Case]) -> None:
    probes = isolation.run(f"{server}/v1/models/sklearn-iris:predict", [cases[0], cases[-1]],
                           host="sklearn-iris-tenant-a.example.com")
    assert [(p.status, p.ok) for p in probes] == [(403, True), (200, True)]
    assert probes[0].error == "RBAC: access denied"
    first, second = _Recorder.seen
    assert first["host"] == "sklearn-iris-tenant-a.example.com" and first["auth"] == ""
    assert second["auth"] == f"Bearer {cases[-1].token}"
    assert json.loads(second["body"]) == isolation.IRIS_REQUEST
    assert second["path"] == "/v1/models/sklearn-iris:predict"


def test_probe_reports_an_unreachable_gateway(cases: list[isolation.Case]) -> None:
    (probe,) = isolation.run("http://127.0.0.1:9/v1/models/x:predict", [cases[-1]], timeout_s=2)
    assert probe.status is None and "no answer" in probe.error and not probe.ok
