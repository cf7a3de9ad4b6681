"""What a tenant's sidecar answers a request, computed from the rendered RequestAuthentication
and AuthorizationPolicy, following the upstream code the answer comes from (read at the pinned
tags; the end-to-end truth is `invoke verify-isolation` against a real mesh):

* istio/istio pilot/pkg/security/authn/policy_applier.go@1.30.3: one jwt_authn provider per
  jwtRule, required as ``requires_any{provider, allow_missing}``; no clock skew set, so Envoy's
  default of 60 s applies; no require_expiration, no max_lifetime.
* Envoy jwt_authn authenticator.cc / verifier.cc: a token whose ``iss`` no provider names fails
  with JwtUnknownIssuer (401); only a missing token passes ``allow_missing``.
* google/jwt_verify_lib src/jwt.cc, src/verify.cc, src/check_audience.cc: ``alg`` must be one of
  the listed algorithms ("none" is not); ``iss``/``sub`` must be strings when present; a missing
  ``exp`` never expires; ``crit`` is never read; keys are chosen by ``kid`` when both sides have
  one and by ``alg`` when the JWK names one; an ``aud`` list passes when any element is allowed,
  compared without an http(s):// prefix or a trailing "/".
* istio/istio pilot/pkg/security/authz/model/generator.go and matcher/{metadata,string}.go@1.30.3:
  ``request.auth.claims[x]`` matches a string claim, or a list claim with any matching element,
  never a number or bool; "*" is the regex ".+", "x*" a prefix, "*x" a suffix;
  ``requestPrincipals`` split "<iss>/<sub>" at the last "/" and match both claims as strings.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

CLOCK_SKEW_S = 60  # Envoy jwt_authn clock_skew_seconds default; Istio sets none
ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
                        "PS384", "PS512", "EdDSA"})


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64json(part: str) -> Any:
    return json.loads(_unb64(part))


def _string_matches(pattern: str, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if pattern == "*":
        return re.fullmatch(".+", value) is not None
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _claim_matches(values: Sequence[str], claim: Any) -> bool:
    if isinstance(claim, list):
        return any(_string_matches(v, element) for v in values for element in claim)
    return any(_string_matches(v, claim) for v in values)


def _audience(value: str) -> str:
    return re.sub(r"^https?://", "", value).rstrip("/")


def _es256_verifies(jwk: dict[str, Any], signing_input: bytes, signature: bytes) -> bool:
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or len(signature) != 64:
        return False
    numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(_unb64(jwk["x"])), int.from_bytes(_unb64(jwk["y"])),
                                            ec.SECP256R1())
    der = encode_dss_signature(int.from_bytes(signature[:32]), int.from_bytes(signature[32:]))
    try:
        numbers.public_key().verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def authenticate(rules: Sequence[dict[str, Any]], token: str, now: int) -> dict[str, Any] | None:
    """The payload jwt_authn puts in the request's metadata, or None when it answers 401."""
    try:
        head, body, sig = token.split(".")
        header, payload = _b64json(head), _b64json(body)
        signature = _unb64(sig)
    except (ValueError, json.JSONDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return None
    if not isinstance(header.get("alg"), str) or header["alg"] not in ALGORITHMS:
        return None  # JwtHeaderNotImplementedAlg
    for claim in ("iss", "sub", "jti"):
        if claim in payload and not isinstance(payload[claim], str):
            return None
    for claim in ("exp", "nbf", "iat"):
        if claim in payload and (not isinstance(payload[claim], int | float) or isinstance(payload[claim], bool)
                                 or payload[claim] < 0):
            return None
    rule = next((r for r in rules if r["issuer"] == payload.get("iss")), None)
    if rule is None:
        return None  # JwtUnknownIssuer
    allowed = {_audience(a) for a in rule.get("audiences") or []}
    if allowed:
        aud = payload.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and _audience(a) in allowed for a in auds):
            return None
    try:
        exp, nbf = int(payload.get("exp", 0)), int(payload.get("nbf", 0))
    except (ValueError, OverflowError):  # NaN, 1e400: not a uint64 (JwtPayloadParseError...)
        return None
    if exp and now > exp + CLOCK_SKEW_S:
        return None
    if nbf and nbf > now + CLOCK_SKEW_S:
        return None
    keys = json.loads(rule["jwks"])["keys"]
    candidates = [k for k in keys if ("kid" not in header or "kid" not in k or k["kid"] == header["kid"])
                  and ("alg" not in k or k["alg"] == header["alg"])]
    signing_input = f"{head}.{body}".encode()
    if header["alg"] != "ES256" or not any(_es256_verifies(k, signing_input, signature) for k in candidates):
        return None  # our JWKS holds ES256 keys only: no other algorithm finds a key
    return payload


def _principal_matches(principal: str, payload: dict[str, Any] | None) -> bool:
    if payload is None:
        return False
    if principal == "*":
        return _string_matches("*", payload.get("iss")) and _string_matches("*", payload.get("sub"))
    issuer, _, subject = principal.rpartition("/")
    return _string_matches(issuer, payload.get("iss")) and _string_matches(subject, payload.get("sub"))


def _rule_matches(rule: dict[str, Any], payload: dict[str, Any] | None, method: str, path: str, *,
                  source_namespace: str | None, port: int) -> bool:
    for source in (entry["source"] for entry in rule.get("from") or []):
        if "requestPrincipals" in source and not any(_principal_matches(p, payload)
                                                     for p in source["requestPrincipals"]):
            return False
        # source.namespaces is the mTLS peer's identity: a caller outside the mesh has none.
        if "namespaces" in source and source_namespace not in source["namespaces"]:
            return False
    for operation in (entry["operation"] for entry in rule.get("to") or []):
        if "methods" in operation and method not in operation["methods"]:
            return False
        if "paths" in operation and not any(_string_matches(p, path) for p in operation["paths"]):
            return False
        if "ports" in operation and str(port) not in operation["ports"]:
            return False
    for condition in rule.get("when") or []:
        claim = re.fullmatch(r"request\.auth\.claims\[(.+)\]", condition["key"])
        assert claim is not None, f"the model knows only request.auth.claims conditions, not {condition['key']}"
        if payload is None or not _claim_matches(condition["values"], payload.get(claim.group(1))):
            return False
    return True


def sidecar_status(objects: Iterable[dict[str, Any]], token: str | None, *, now: int, method: str = "POST",
                   path: str = "/v1/models/sklearn-iris:predict", source_namespace: str | None = "istio-ingress",
                   port: int = 8080) -> int:
    """200, 401 or 403: what the tenant's sidecar answers ``token`` (None: no Authorization) from a
    meshed caller in ``source_namespace`` (None: a caller outside the mesh) on ``port``."""
    objects = list(objects)
    rules = [rule for o in objects if o["kind"] == "RequestAuthentication" for rule in o["spec"]["jwtRules"]]
    policies = [o["spec"] for o in objects if o["kind"] == "AuthorizationPolicy"]
    assert all(p.get("action", "ALLOW") == "ALLOW" for p in policies), "the model knows ALLOW policies only"
    payload = None
    if token is not None:
        payload = authenticate(rules, token, now)
        if payload is None:
            return 401
    allowed = any(_rule_matches(rule, payload, method, path, source_namespace=source_namespace, port=port)
                  for p in policies for rule in p.get("rules") or [])
    return 200 if allowed or not policies else 403


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "the model knows matchLabels selectors only"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def network_allows(objects: Iterable[dict[str, Any]], *, source_namespace: str, pod_labels: dict[str, str],
                   port: int) -> bool:
    """Do the namespace's NetworkPolicies admit a TCP connection from a pod in ``source_namespace``
    to a pod with ``pod_labels`` on ``port``? (Kubernetes' semantics: isolated for ingress once any
    policy of type Ingress selects the pod; then allowed when any rule of any such policy admits.)"""
    policies = [o["spec"] for o in objects if o["kind"] == "NetworkPolicy"
                and "Ingress" in o["spec"].get("policyTypes", ["Ingress"]) and _selects(o["spec"]["podSelector"],
                                                                                         pod_labels)]
    if not policies:
        return True
    for spec in policies:
        for rule in spec.get("ingress") or []:
            peers = rule.get("from")
            peer_ok = not peers or any(
                "namespaceSelector" in peer and _selects(peer["namespaceSelector"],
                                                         {"kubernetes.io/metadata.name": source_namespace})
                for peer in peers)
            ports = rule.get("ports")
            port_ok = not ports or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)
            if peer_ok and port_ok:
                return True
    return False
