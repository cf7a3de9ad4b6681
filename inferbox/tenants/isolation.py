"""verify-isolation: call a tenant's model through the gateway with good and bad tokens.

Each case names the status the mesh must answer with: 401 when the sidecar's JWT check
(RequestAuthentication) refuses the token, 403 when the token is fine but the AuthorizationPolicy
does not allow the caller, 200 for an allowed caller. The end-to-end run needs the platform
(kind + Istio + KServe with the tenant's model deployed); the token crafting is unit-tested on
its own (each bad token fails joserfc's verification for the stated reason).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, OctKey
from joserfc.util import urlsafe_b64decode, urlsafe_b64encode

from inferbox.tenants.keys import AUDIENCE, CURVE, ISSUER, KeyStore, sign, token_claims

# A request the sklearn iris model (and any v1-protocol model taking 4 floats) can answer.
IRIS_REQUEST = {"instances": [[6.8, 2.8, 4.8, 1.4]]}


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    token: str | None
    expected: int
    # Why the mesh must refuse it (machine-checkable in the unit tests): none, missing, expired,
    # audience, signature, algorithm, unknown-key, tenant.
    flaw: str


@dataclass(frozen=True)
class Probe:
    case: Case
    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == self.case.expected


def _tamper_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    raw = bytearray(urlsafe_b64decode(signature.encode()))
    raw[0] ^= 0x01  # one flipped bit: a signature that no longer matches header.payload
    return f"{header}.{payload}.{urlsafe_b64encode(bytes(raw)).decode()}"


def _unsigned(claims: dict[str, Any]) -> str:
    """An ``alg: none`` token (RFC 7519 "unsecured JWT"), made by joserfc, which warns about it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode({"alg": "none", "typ": "JWT"}, claims, OctKey.import_key(b"x" * 32), algorithms=["none"])


def craft_cases(store: KeyStore, *, tenant: str, other_tenant: str, subject: str, audience: str = AUDIENCE,
                issuer: str = ISSUER, ttl_s: int = 300, now: int | None = None) -> list[Case]:
    """The tokens verify-isolation sends, each with the status the mesh must answer."""
    now = int(time.time()) if now is None else now
    key, kid = store.signing_key()

    def claims(**changes: Any) -> dict[str, Any]:
        base = token_claims(tenant=tenant, subject=subject, audience=audience, issuer=issuer, ttl_s=ttl_s, now=now)
        return {**base, **changes}

    valid = sign(claims(), key, kid)
    stranger = ECKey.generate_key(CURVE)  # a key the JWKS does not publish
    return [
        Case("no token", "no Authorization header", None, 403, "missing"),
        Case("expired", "signed correctly, exp 30 min ago", sign(claims(iat=now - 3600, nbf=now - 3600,
                                                                         exp=now - 1800), key, kid), 401, "expired"),
        Case("wrong audience", "aud is another service's", sign(claims(aud="some-other-service"), key, kid), 401,
             "audience"),
        Case("tampered signature", "one bit of the signature flipped", _tamper_signature(valid), 401, "signature"),
        Case("alg none", "unsigned token (alg: none)", _unsigned(claims()), 401, "algorithm"),
        Case("unknown key", "signed by a key not in the JWKS", sign(claims(), stranger, stranger.thumbprint()), 401,
             "unknown-key"),
        Case(f"{other_tenant}'s token", f"valid token whose tenant claim is {other_tenant}",
             sign(claims(tenant=other_tenant), key, kid), 403, "tenant"),
        Case("valid", f"{subject} calling {tenant}", valid, 200, "none"),
    ]


def probe(url: str, case: Case, *, host: str | None = None, body: dict[str, Any] | None = None,
          timeout_s: float = 10.0) -> Probe:
    """POST ``body`` to ``url`` with the case's token; the HTTP status, whatever it is."""
    headers = {"Content-Type": "application/json"}
    if host:
        headers["Host"] = host  # the gateway routes by the InferenceService's host (inferbox.models.hosts)
    if case.token is not None:
        headers["Authorization"] = f"Bearer {case.token}"
    data = json.dumps(body if body is not None else IRIS_REQUEST).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Probe(case, response.status)
    except urllib.error.HTTPError as exc:
        return Probe(case, exc.code, exc.read(300).decode(errors="replace").strip())
    except (urllib.error.URLError, OSError) as exc:
        return Probe(case, None, f"no answer: {getattr(exc, 'reason', exc)}")


def run(url: str, cases: Sequence[Case], *, host: str | None = None, timeout_s: float = 10.0) -> list[Probe]:
    return [probe(url, case, host=host, timeout_s=timeout_s) for case in cases]
