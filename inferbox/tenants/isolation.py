"""verify-isolation: call a tenant's model through the gateway with good and bad tokens.

Each case names the status the mesh must answer with: 401 when the sidecar's JWT check
(RequestAuthentication) refuses the token, 403 when the token is fine but the AuthorizationPolicy
does not allow the caller, 200 for an allowed caller. The end-to-end run needs the platform
(kind + Istio + KServe with the tenant's model deployed); the token crafting is unit-tested on
its own (each bad token fails joserfc's verification for the stated reason).

The AI gateway path (``ai_cases``) sends OpenAI chat requests to the tenant's host on the AI
gateway (manifests/tenant/aigateway.yaml.j2) with tokens from the same crafting: no token and
another tenant's token -> 401 (SecurityPolicy JWT), a caller the tenant does not list -> 403
(SecurityPolicy authorization, default Deny), a model the tenant may not use -> 404 (the AI
gateway's route-not-found rule), an allowed model -> 200, and then, with the valid token, chat
requests until the token budget answers 429 (``exhaust_budget``, bounded by the budget itself).
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
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

# Which way a case's request goes: the Istio ingress gateway to the predictor's sidecar (KServe
# v1 predict), or the AI gateway's OpenAI endpoint (inferbox.aigateway, the tenant's host).
MESH = "mesh"
AI_GATEWAY = "ai-gateway"
# Where the AI gateway is reached from this machine: its Service (inferbox-ai in
# envoy-gateway-system, port 80, ClusterIP) forwarded to this local port.
AI_GATEWAY_LOCAL_PORT = 8081
AI_GATEWAY_URL = f"http://127.0.0.1:{AI_GATEWAY_LOCAL_PORT}"
AI_CHAT_PATH = "/v1/chat/completions"
# The caller the "not a caller" case claims to be: a valid token of the tenant for a subject no
# tenant lists (callers may not contain spaces, so a real caller can never be this).
OUTSIDER = "not a caller of this tenant"
# The AI gateway's answer to a model no rule of the tenant's route matches (ai-gateway
# internal/controller/ai_gateway_route.go@v1.1.0, route-not-found).
ROUTE_NOT_FOUND = "No matching route found"
# A model name no catalog has, for a tenant where every OpenAI model of the catalog is allowed.
NO_SUCH_MODEL = "inferbox-no-such-model"
BUDGET_MAX_TOKENS = 16  # max_tokens of each request the budget case sends: small answers, many requests
# Requests the gateway may still admit once the window's usage is at the budget: it charges a
# response's tokens after the response (cost.response), so one in flight can slip through.
BUDGET_SLACK = 2
BUDGET_TIMEOUT_S = 120.0
# Prompt padding (words) for budgets counting input or total tokens: fewer, larger requests spend
# them; bounded so the prompt fits a small model's context (smollm2-local: 2048 tokens).
BUDGET_MAX_PROMPT_WORDS = 800
_WINDOW_S = {"minute": 60, "hour": 3600}
_USAGE_KEY = {"input": "prompt_tokens", "output": "completion_tokens", "total": "total_tokens"}


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
    path: str = MESH  # MESH or AI_GATEWAY
    model: str | None = None  # the OpenAI "model" the request names (AI gateway cases)
    expect_text: str = ""  # the answer's body must contain this too
    budget: Budget | None = None  # send requests until this budget answers (the over-budget case)
    skip: str = ""  # why the case is not sent (then it neither passes nor fails the run)


@dataclass(frozen=True)
class Budget:
    """A tenant's token budget as the gateway counts it (inferbox.tenants.spec.TokenBudget)."""

    tokens: int
    per: str  # minute or hour
    count: str = "total"  # input, output or total tokens

    @property
    def window_s(self) -> int:
        return _WINDOW_S[self.per]

    def __str__(self) -> str:
        return f"{self.tokens} {self.count} tokens per {self.per}"


@dataclass(frozen=True)
class Probe:
    case: Case
    status: int | None
    error: str = ""
    detail: str = ""  # what the budget case did (requests sent, tokens spent)

    @property
    def skipped(self) -> bool:
        return bool(self.case.skip)

    @property
    def ok(self) -> bool:
        if self.skipped:
            return True
        return self.status == self.case.expected and self.case.expect_text in self.error


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
    """POST ``body`` to ``url`` with the case's token; the HTTP status, whatever it is (the Host
    header routes: the InferenceService's host, inferbox.models.hosts, or the tenant's AI host)."""
    status, text = _post(url, case.token, body if body is not None else IRIS_REQUEST, host=host, timeout_s=timeout_s)
    return Probe(case, status, "" if status is not None and status < 400 else text)


def _post(url: str, token: str | None, body: dict[str, Any], *, host: str | None,
          timeout_s: float) -> tuple[int | None, str]:
    """(status, body text) of one POST; status None when nothing answered (the reason as text)."""
    headers = {"Content-Type": "application/json"}
    if host:
        headers["Host"] = host
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read(1 << 20).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(300).decode(errors="replace").strip()
    except (urllib.error.URLError, OSError) as exc:
        return None, f"no answer: {getattr(exc, 'reason', exc)}"


def run(url: str, cases: Sequence[Case], *, host: str | None = None, timeout_s: float = 10.0) -> list[Probe]:
    return [probe(url, case, host=host, timeout_s=timeout_s) for case in cases]


# -- the AI gateway path -----------------------------------------------------------------------------


def smallest_budget(budgets: Iterable[Any]) -> Budget | None:
    """The budget the fewest tokens exhaust (a tie: the shorter window), of any objects with
    ``tokens``, ``per`` and ``count`` (TokenBudget); None without budgets."""
    found = [Budget(int(b.tokens), str(b.per), str(b.count)) for b in budgets]
    return min(found, key=lambda b: (b.tokens, b.window_s)) if found else None


def denied_model(allowed: Iterable[str], openai_models: Iterable[str]) -> str:
    """A model the tenant may not use: the first OpenAI model of the catalog it does not list,
    else a name no catalog has (either reaches no rule of its route)."""
    allowed = set(allowed)
    return next((m for m in sorted(openai_models) if m not in allowed), NO_SUCH_MODEL)


def ai_cases(store: KeyStore, *, tenant: str, other_tenant: str, subject: str, model: str, denied: str,
             budget: Budget | None, budget_skip: str = "", issuer: str = ISSUER, ttl_s: int = 300,
             now: int | None = None) -> list[Case]:
    """The requests verify-isolation sends to ``tenant``'s OpenAI endpoint on the AI gateway,
    each with the status the gateway must answer (tokens from :func:`craft_cases`). The
    over-budget case comes last: it spends the tenant's budget (``budget`` None: skipped, with
    ``budget_skip`` or "no tokenBudgets" as the reason)."""
    crafted = {c.flaw: c for c in craft_cases(store, tenant=tenant, other_tenant=other_tenant, subject=subject,
                                              issuer=issuer, ttl_s=ttl_s, now=now)}
    outsider = next(c for c in craft_cases(store, tenant=tenant, other_tenant=other_tenant, subject=OUTSIDER,
                                           issuer=issuer, ttl_s=ttl_s, now=now) if c.flaw == "none")
    valid = crafted["none"]

    def ai(case: Case, name: str, description: str, expected: int, **changes: Any) -> Case:
        return replace(case, name=name, description=description, expected=expected, path=AI_GATEWAY,
                       model=changes.pop("model", model), mesh_limit="", **changes)

    if budget is not None and not budget_skip:
        over = ai(valid, "over budget", f"{subject}'s valid token, chat requests (max_tokens "
                  f"{BUDGET_MAX_TOKENS}) until 429; budget {budget}", 429, budget=budget)
    else:
        over = ai(valid, "over budget", f"{subject}'s valid token, chat requests until 429", 429,
                  skip=budget_skip or f"{tenant} has no tokenBudgets")
    return [
        ai(crafted["missing"], "no token", "no Authorization header", 401),
        ai(crafted["tenant"], f"{other_tenant}'s token", f"valid token of {other_tenant} (its issuer, the real "
           "key)", 401),
        ai(outsider, "not a caller", f"valid token of {tenant} for a subject it does not list", 403),
        ai(valid, "model not allowed", f"{subject}'s valid token, model {denied}", 404, model=denied,
           expect_text=ROUTE_NOT_FOUND),
        ai(valid, "valid", f"{subject}'s valid token, model {model}", 200),
        over,
    ]


def chat_request(model: str, *, max_tokens: int = BUDGET_MAX_TOKENS, prompt_words: int = 0) -> dict[str, Any]:
    """A small OpenAI chat completion request; ``prompt_words`` pads the prompt (input tokens)."""
    content = "Say hello in one short sentence."
    if prompt_words > 0:
        content = " ".join(["word"] * prompt_words) + "\n\nIgnore the words above. " + content
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0}


def budget_prompt_words(budget: Budget, max_words: int = BUDGET_MAX_PROMPT_WORDS) -> int:
    """Padding that spends an input or total budget in about ten requests (none for output budgets)."""
    if budget.count == "output":
        return 0
    return max(0, min(max_words, budget.tokens // 10))


def _spent(text: str, count: str) -> int | None:
    """The tokens a 200's ``usage`` says the request spent, of the budget's kind."""
    try:
        usage = json.loads(text).get("usage") or {}
        value = usage.get(_USAGE_KEY[count])
        if value is None and count == "total":
            value = int(usage["prompt_tokens"]) + int(usage["completion_tokens"])
        return None if value is None else int(value)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def exhaust_budget(url: str, case: Case, *, host: str | None = None, timeout_s: float = 10.0,
                   deadline_s: float = BUDGET_TIMEOUT_S, slack: int = BUDGET_SLACK,
                   clock: Callable[[], float] = time.time) -> Probe:
    """Send chat requests with the case's token until one answers 429.

    The bound comes from the budget: the gateway admits a request while the window's usage is
    under the budget, so once the tokens the answers report (``usage``, of the budget's kind)
    reach it within one window (windows are aligned to the minute or hour, as Envoy's rate limit
    service counts them), at most ``slack`` more requests may be admitted before the case
    fails. ``deadline_s`` bounds the time: requests too slow to spend the budget within one
    window fail the case too, saying how far they got. Any answer but 200 and 429 ends it."""
    budget = case.budget
    assert budget is not None and case.model is not None
    body = chat_request(case.model, prompt_words=budget_prompt_words(budget))
    started = clock()
    window, spent, most, over, sent = None, 0, 0, 0, 0
    while True:
        if clock() - started > deadline_s:
            return Probe(case, 200 if sent else None, f"no 429 within {deadline_s:g} s ({sent} requests): at most "
                         f"{most} of {budget} spent in one window; the requests spend too slowly to reach the "
                         "budget within its window (use a tenant with a smaller budget, or a longer "
                         "--ai-budget-timeout)", detail=f"{sent} requests")
        now_window = math.floor(clock() / budget.window_s)
        if now_window != window:
            window, spent, over = now_window, 0, 0
        status, text = _post(url, case.token, body, host=host, timeout_s=timeout_s)
        sent += 1
        if status == 429:
            return Probe(case, 429, text, detail=f"429 after {sent} requests, {spent} {budget.count} tokens "
                                                 f"spent in this {budget.per}")
        if status != 200:
            return Probe(case, status, f"request {sent}: {text}", detail=f"{sent} requests")
        tokens = _spent(text, budget.count)
        if tokens is None:
            return Probe(case, 200, f"request {sent}: the answer has no usage to count {budget.count} tokens "
                                    "by (the gateway counts the same usage)", detail=f"{sent} requests")
        if spent >= budget.tokens:
            over += 1
        spent += tokens
        most = max(most, spent)
        if over > slack:
            return Probe(case, 200, f"no 429 after {sent} requests: {spent} {budget.count} tokens spent in one "
                                    f"{budget.per}, over the budget of {budget} (and {slack} more requests "
                                    "allowed for late charging)", detail=f"{sent} requests")


def run_ai(base_url: str, cases: Sequence[Case], *, host: str | None = None, timeout_s: float = 10.0,
           budget_timeout_s: float = BUDGET_TIMEOUT_S, clock: Callable[[], float] = time.time) -> list[Probe]:
    """Send the AI gateway cases to ``base_url`` (chat completions, Host ``host``), in order."""
    url = f"{base_url.rstrip('/')}{AI_CHAT_PATH}"
    probes = []
    for case in cases:
        if case.skip:
            probes.append(Probe(case, None))
        elif case.budget is not None:
            probes.append(exhaust_budget(url, case, host=host, timeout_s=timeout_s, deadline_s=budget_timeout_s,
                                         clock=clock))
        else:
            assert case.model is not None
            probes.append(probe(url, case, host=host, body=chat_request(case.model, max_tokens=8),
                                timeout_s=timeout_s))
    return probes
