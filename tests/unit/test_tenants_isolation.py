"""verify-isolation's tokens, and the token table: for every case, what the tenant's sidecar
answers (computed from the rendered policies by tests/unit/meshmodel.py, which follows the
upstream code) and what ``verify_token`` says. The end-to-end check needs kind + Istio + KServe.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import errors, jws, jwt

from inferbox.tenants import isolation
from inferbox.tenants.keys import ISSUER, KeyStore, TokenRefused, verify_token
from inferbox.tenants.render import render_tenant
from inferbox.tenants.spec import Tenant
from tests.unit.meshmodel import sidecar_status
from tests.unit.test_tenants_spec import VALID

NOW = 1_800_000_000

# flaw -> (sidecar's status in tenant-a, what verify_token raises for tenant-a; None: accepts)
TABLE: dict[str, tuple[int, type[Exception] | None]] = {
    "missing": (403, None),  # no token to verify
    "expired": (401, TokenRefused),
    "not-yet-valid": (401, TokenRefused),
    "issuer": (401, TokenRefused),
    "audience": (401, TokenRefused),
    "signature": (401, errors.BadSignatureError),
    "algorithm": (401, errors.UnsupportedAlgorithmError),
    "hmac-public-key": (401, errors.UnsupportedAlgorithmError),
    "unknown-key": (401, errors.InvalidKeyIdError),
    "tenant": (401, TokenRefused),
    "list-tenant": (401, TokenRefused),  # the other tenant's issuer; the own-issuer one: below
    "no-exp": (200, TokenRefused),
    "long-exp": (200, TokenRefused),
    "crit": (200, errors.UnsupportedHeaderError),
    "none": (200, None),
}


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    keys = KeyStore(tmp_path / "keys")
    keys.ensure()
    return keys


@pytest.fixture
def cases(store: KeyStore) -> list[isolation.Case]:
    return isolation.craft_cases(store, tenant="tenant-a", other_tenant="tenant-b", subject="iris-web", now=NOW)


@pytest.fixture
def rendered(store: KeyStore) -> Callable[[str], list[dict[str, Any]]]:
    """The rendered objects of a tenant like the shipped tenant-a (callers iris-web, group)."""
    def render(name: str) -> list[dict[str, Any]]:
        doc = {**VALID, "name": name, "callers": {"subjects": ["iris-web"], "groups": [f"{name}-apps"]}}
        return render_tenant(Tenant.model_validate(doc), ISSUER, store.jwks_json())
    return render


def verdict(store: KeyStore, case: isolation.Case, tenant: str) -> str:
    if case.token is None:
        return "no token"
    try:
        verify_token(store, case.token, tenant=tenant, now=NOW)
    except errors.JoseError as exc:
        return type(exc).__name__
    return "accepted"


def test_the_token_table(store: KeyStore, cases: list[isolation.Case],
                         rendered: Callable[[str], list[dict[str, Any]]]) -> None:
    """Every case: the sidecar's status (as the case expects), verify_token's verdict, and the rule
    that verify_token is never more lenient than the mesh."""
    tenant_a, tenant_b = rendered("tenant-a"), rendered("tenant-b")
    rows = []
    for case in cases:
        status = sidecar_status(tenant_a, case.token, now=NOW)
        rows.append((case.name, status, verdict(store, case, "tenant-a")))
        assert status == case.expected, (case.name, status)
        expected_status, refusal = TABLE[case.flaw]
        if case.flaw != "list-tenant" or case.expected == 401:
            assert status == expected_status, (case.name, status)
        if case.token is None:
            continue
        if refusal is None:
            assert verify_token(store, case.token, tenant="tenant-a", now=NOW)["sub"] == "iris-web"
        else:
            with pytest.raises(refusal):
                verify_token(store, case.token, tenant="tenant-a", now=NOW)
        # Stricter or equal, never laxer: what verify_token accepts, the sidecar admits.
        if rows[-1][2] == "accepted":
            assert status == 200, case.name
        # The mesh admits a token verify_token refuses only where Istio cannot express the rule.
        if status == 200 and rows[-1][2] != "accepted":
            assert case.mesh_limit, case.name
        # No token opens both tenants: not even one naming both.
        assert not (status == 200 and sidecar_status(tenant_b, case.token, now=NOW) == 200), case.name
    assert {c.flaw for c in cases} == set(TABLE)
    assert len(rows) == 16


def test_no_token_satisfies_two_tenants(store: KeyStore, rendered: Callable[[str], list[dict[str, Any]]]) -> None:
    """Whatever its claims, a token's single iss names one tenant: every tenant but that one refuses."""
    key, kid = store.signing_key()
    names = ["tenant-a", "tenant-b", "tenant-c"]
    objects = {n: rendered(n) for n in names}
    for issuer_tenant in names:
        for tenant_claim in (issuer_tenant, names, ["tenant-a", "tenant-c"]):
            claims = isolation.token_claims(tenant="x", subject="iris-web", ttl_s=300, now=NOW,
                                            issuer=isolation.tenant_issuer(issuer_tenant))
            token = isolation.sign({**claims, "tenant": tenant_claim, "groups": [f"{n}-apps" for n in names]},
                                   key, kid)
            opened = [n for n in names if sidecar_status(objects[n], token, now=NOW) == 200]
            assert opened in ([], [issuer_tenant]), (issuer_tenant, tenant_claim, opened)


def test_health_paths_need_no_token(store: KeyStore, rendered: Callable[[str], list[dict[str, Any]]]) -> None:
    objects = rendered("tenant-a")
    assert sidecar_status(objects, None, now=NOW, method="GET", path="/v2/health/ready") == 200
    assert sidecar_status(objects, None, now=NOW, method="POST", path="/v2/health/ready") == 403


def test_bad_tokens_differ_from_the_valid_one_only_in_their_flaw(store: KeyStore,
                                                                 cases: list[isolation.Case]) -> None:
    by_flaw = {c.flaw: c for c in cases}
    keys = store.verification_keys()

    def claims(flaw: str) -> dict[str, Any]:
        return dict(jwt.decode(by_flaw[flaw].token or "", keys).claims)

    valid = claims("none")
    # The expired token is correctly signed: it fails on time alone.
    assert {k: v for k, v in claims("expired").items() if k not in ("iat", "nbf", "exp", "jti")} == \
        {k: v for k, v in valid.items() if k not in ("iat", "nbf", "exp", "jti")}
    # The other tenant's token is a perfectly valid token, for the wrong tenant, by an allowed subject.
    other = claims("tenant")
    assert other["tenant"] == "tenant-b" and other["sub"] == valid["sub"]
    assert other["iss"] == "https://issuer.inferbox.local/tenants/tenant-b"
    assert {k for k in claims("no-exp")} == set(valid) - {"exp"}
    # The tampered token carries the valid token's header and claims; only the signature changed.
    tampered, original = (by_flaw["signature"].token or "").split("."), (by_flaw["none"].token or "").split(".")
    assert tampered[:2] == original[:2] and tampered[2] != original[2]
    assert (by_flaw["algorithm"].token or "").endswith(".")  # alg none: an empty signature
    header = jws.extract_compact((by_flaw["crit"].token or "").encode()).protected
    assert header["crit"] == ["x-inferbox-ext"]


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


@pytest.mark.parametrize(("change", "reason"), [
    ({"jti": 123}, "jti is not a string"),
    ({"jti": None}, "jti is not a string"),
    ({"nbf": -1}, "non-negative integers"),
    ({"nbf": -(2**70)}, "non-negative integers"),
    ({"iss": "https://issuer.inferbox.local/tenants/", "tenant": ""}, "does not end in a tenant name"),
    ({"iss": "https://issuer.inferbox.local/tenants/x/y", "tenant": "x/y"}, "does not end in a tenant name"),
])
def test_verify_token_without_a_tenant_is_as_strict(store: KeyStore, change: dict[str, Any], reason: str) -> None:
    """Tokens the sidecar refuses (meshmodel: 401) that an earlier verify_token accepted."""
    key, kid = store.signing_key()
    claims = {**isolation.token_claims(tenant="tenant-a", subject="iris-web", ttl_s=300, now=NOW), **change}
    token = isolation.sign(claims, key, kid)
    with pytest.raises(TokenRefused, match=reason):
        verify_token(store, token, now=NOW)


def test_a_key_named_twice_is_refused(store: KeyStore) -> None:
    """Parsers disagree on which of two equal keys wins: refuse rather than guess."""
    key, kid = store.signing_key()
    claims = isolation.token_claims(tenant="tenant-a", subject="iris-web", ttl_s=300, now=NOW)
    payload = json.dumps(claims)[:-1] + ', "tenant": "tenant-b"}'  # "tenant" twice
    token = isolation.sign_compact({"alg": "ES256", "kid": kid, "typ": "JWT"}, payload.encode(), key)
    with pytest.raises(TokenRefused, match="names tenant twice"):
        verify_token(store, token, now=NOW)
