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

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey
from joserfc.util import urlsafe_b64decode, urlsafe_b64encode

from inferbox.tenants.keys import AUDIENCE, CURVE, ISSUER, KeyStore, sign, tenant_issuer, token_claims

# A request the sklearn iris model (and any v1-protocol model taking 4 floats) can answer.
IRIS_REQUEST = {"instances": [[6.8, 2.8, 4.8, 1.4]]}


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    token: str | None
    expected: int  # the status the tenant's sidecar answers (README, "Tenants: tokens")
    # What is wrong with the token (machine-checkable in the unit tests): none, missing, expired,
    # not-yet-valid, issuer, audience, signature, algorithm, hmac-public-key, unknown-key, tenant,
    # list-tenant, no-exp, long-exp, crit.
    flaw: str
    # Why the mesh admits a token verify_token refuses: what Istio 1.30 cannot express.
    mesh_limit: str = ""


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


def _hmac_with_public_key(claims: dict[str, Any], public_jwk: dict[str, Any]) -> str:
    """HS256 keyed with the issuer's *public* key: the classic algorithm-confusion forgery."""
    secret = json.dumps(public_jwk, sort_keys=True).encode()
    return jwt.encode({"alg": "HS256", "typ": "JWT", "kid": public_jwk["kid"]}, claims, OctKey.import_key(secret),
                      algorithms=["HS256"])


def _b64(data: bytes) -> str:
    return urlsafe_b64encode(data).decode().rstrip("=")


def sign_compact(header: dict[str, Any], payload: bytes, key: ECKey) -> str:
    """ES256 over any header and payload bytes (joserfc rightly refuses to make a token with a
    ``crit`` it does not understand, or with a key named twice): RFC 7515 compact
    serialization, the signature as r || s (RFC 7518 3.4)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(payload)}"
    der = key.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr]
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def craft_cases(store: KeyStore, *, tenant: str, other_tenant: str, subject: str, audience: str = AUDIENCE,
                issuer: str = ISSUER, ttl_s: int = 300, now: int | None = None) -> list[Case]:
    """The tokens verify-isolation sends to ``tenant``'s model, each with the status its sidecar
    must answer: 401 when RequestAuthentication refuses the token, 403 when the AuthorizationPolicy
    refuses the caller, 200 when admitted. All signed with the real key unless the flaw says
    otherwise; ``subject`` must be one of the tenant's callers."""
    now = int(time.time()) if now is None else now
    key, kid = store.signing_key()
    own, others = tenant_issuer(tenant, issuer), tenant_issuer(other_tenant, issuer)

    def claims(*, drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
        base = token_claims(tenant=tenant, subject=subject, audience=audience, issuer=own, ttl_s=ttl_s, now=now)
        return {k: v for k, v in {**base, **changes}.items() if k not in drop}

    valid = sign(claims(), key, kid)
    stranger = ECKey.generate_key(CURVE)  # a key the JWKS does not publish
    public = next(k for k in store.jwks()["keys"] if k["kid"] == kid)
    limit = "Istio's RequestAuthentication has no field to"
    return [
        Case("no token", "no Authorization header", None, 403, "missing"),
        Case("expired", "exp 30 min ago", sign(claims(iat=now - 3600, nbf=now - 3600, exp=now - 1800), key, kid),
             401, "expired"),
        Case("not yet valid", "nbf 30 min ahead", sign(claims(nbf=now + 1800, exp=now + 3600), key, kid), 401,
             "not-yet-valid"),
        Case("wrong issuer", "iss is the issuers' base, no tenant's", sign(claims(iss=issuer), key, kid), 401,
             "issuer"),
        Case("wrong audience", "aud is another service's", sign(claims(aud="some-other-service"), key, kid), 401,
             "audience"),
        Case("tampered signature", "one bit of the signature flipped", _tamper_signature(valid), 401, "signature"),
        Case("alg none", "unsigned token (alg: none)", _unsigned(claims()), 401, "algorithm"),
        Case("HS256 with the public key", "HMAC keyed with the published public key", _hmac_with_public_key(
            claims(), public), 401, "hmac-public-key"),
        Case("unknown key", "signed by a key not in the JWKS", sign(claims(), stranger, stranger.thumbprint()), 401,
             "unknown-key"),
        Case(f"{other_tenant}'s token", f"valid token of {other_tenant} (its issuer and tenant claim)",
             sign(claims(iss=others, tenant=other_tenant), key, kid), 401, "tenant"),
        Case("two tenants, other's issuer", f"tenant claim [{tenant}, {other_tenant}], {other_tenant}'s issuer",
             sign(claims(iss=others, tenant=[tenant, other_tenant]), key, kid), 401, "list-tenant"),
        Case("two tenants, own issuer", f"tenant claim [{tenant}, {other_tenant}], {tenant}'s issuer",
             sign(claims(tenant=[tenant, other_tenant]), key, kid), 200, "list-tenant",
             mesh_limit="a list claim matches when any element does; the issuer binds the token to this tenant "
                        "alone, and verify_token refuses it"),
        Case("no exp", "no exp claim", sign(claims(drop=("exp",)), key, kid), 200, "no-exp",
             mesh_limit=f"{limit} require exp (Envoy: never expires); verify_token refuses it"),
        Case("exp in 10 years", "exp 10 years ahead", sign(claims(exp=now + 10 * 365 * 86400), key, kid), 200,
             "long-exp", mesh_limit=f"{limit} bound the lifetime; verify_token refuses over 24 h"),
        Case("crit header", "crit: [x-inferbox-ext]", sign_compact(
            {"alg": "ES256", "kid": kid, "typ": "JWT", "crit": ["x-inferbox-ext"], "x-inferbox-ext": True},
            json.dumps(claims()).encode(), key), 200, "crit",
             mesh_limit="jwt_verify_lib never reads crit; verify_token refuses it"),
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
