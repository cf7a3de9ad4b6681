"""verify-isolation through the AI gateway: the cases and the statuses they expect (pure), and
the probing, the over-budget loop and its bound against a gateway played on 127.0.0.1 by a
loopback HTTP server that answers as the AI gateway does (manifests/tenant/aigateway.yaml.j2):
401 without a valid token of the tenant's issuer, 403 for a caller it does not list, 404 with
the route-not-found body for a model it may not use, 429 once the window's tokens reach the
budget, else 200 with the OpenAI ``usage``."""

from __future__ import annotations

import io
import json
import math
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from joserfc import errors
from rich.console import Console

from inferbox.config import Settings
from inferbox.tenants import app, isolation
from inferbox.tenants.keys import KeyStore, tenant_issuer, verify_token
from tests.loopback import QuietHandler, http_server

TENANT, OTHER = "tenant-a", "tenant-b"
CALLERS = {"iris-web", "iris-ci"}
ALLOWED = {"smollm2-local"}
BUDGET = isolation.Budget(200, "minute", "total")


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    keys = KeyStore(tmp_path / "keys")
    keys.ensure()
    return keys


def cases_for(store: KeyStore, budget: isolation.Budget | None = BUDGET, **kwargs: Any) -> list[isolation.Case]:
    return isolation.ai_cases(store, tenant=TENANT, other_tenant=OTHER, subject="iris-web", model="smollm2-local",
                              denied="qwen-small", budget=budget, **kwargs)


# -- the cases (pure) ------------------------------------------------------------------------------------


def test_the_ai_gateway_cases_and_their_statuses(store: KeyStore) -> None:
    cases = cases_for(store)
    assert [(c.name, c.expected, c.model) for c in cases] == [
        ("no token", 401, "smollm2-local"),
        ("tenant-b's token", 401, "smollm2-local"),
        ("not a caller", 403, "smollm2-local"),
        ("model not allowed", 404, "qwen-small"),
        ("valid", 200, "smollm2-local"),
        ("over budget", 429, "smollm2-local"),  # last: it spends the budget
    ]
    assert all(c.path == isolation.AI_GATEWAY and not c.mesh_limit and not c.skip for c in cases)
    by_name = {c.name: c for c in cases}
    assert by_name["no token"].token is None
    assert by_name["model not allowed"].expect_text == isolation.ROUTE_NOT_FOUND
    assert by_name["over budget"].budget == BUDGET and by_name["over budget"].token == by_name["valid"].token
    # The tokens are the crafted ones, checked as the gateway's JWT filter checks them.
    other = verify_token(store, by_name["tenant-b's token"].token or "")
    assert (other["iss"], other["tenant"]) == (tenant_issuer(OTHER), OTHER)  # its own issuer, the real key
    with pytest.raises(errors.JoseError):
        verify_token(store, by_name["tenant-b's token"].token or "", tenant=TENANT)
    outsider = verify_token(store, by_name["not a caller"].token or "", tenant=TENANT)
    assert outsider["sub"] == isolation.OUTSIDER and outsider["sub"] not in CALLERS
    valid = verify_token(store, by_name["valid"].token or "", tenant=TENANT)
    assert (valid["sub"], valid["iss"]) == ("iris-web", tenant_issuer(TENANT))


def test_the_budget_case_is_skipped_saying_why(store: KeyStore) -> None:
    [over] = [c for c in cases_for(store, budget=None) if c.expected == 429]
    assert over.skip == "tenant-a has no tokenBudgets" and over.budget is None
    [over] = [c for c in cases_for(store, budget_skip="--no-ai-budget") if c.expected == 429]
    assert over.skip == "--no-ai-budget"
    probe = isolation.Probe(over, None)
    assert probe.skipped and probe.ok


def test_smallest_budget_denied_model_and_padding() -> None:
    class Spec:  # shaped like inferbox.tenants.spec.TokenBudget
        def __init__(self, tokens: int, per: str, count: str = "total") -> None:
            self.tokens, self.per, self.count = tokens, per, count

    assert isolation.smallest_budget([]) is None
    assert isolation.smallest_budget([Spec(20000, "minute"), Spec(300000, "hour", "output")]) == \
        isolation.Budget(20000, "minute", "total")
    assert isolation.smallest_budget([Spec(500, "hour", "input"), Spec(500, "minute")]) == \
        isolation.Budget(500, "minute", "total")  # a tie: the shorter window empties first
    assert isolation.denied_model(["sklearn-iris", "smollm2-local"], {"smollm2-local", "qwen-small", "phi-2"}) \
        == "phi-2"
    assert isolation.denied_model(["a", "b"], {"a", "b"}) == isolation.NO_SUCH_MODEL
    assert isolation.budget_prompt_words(isolation.Budget(20000, "minute")) == isolation.BUDGET_MAX_PROMPT_WORDS
    assert isolation.budget_prompt_words(isolation.Budget(300, "minute", "input")) == 30
    assert isolation.budget_prompt_words(isolation.Budget(300, "minute", "output")) == 0
    body = isolation.chat_request("m", prompt_words=3)
    assert body["model"] == "m" and body["max_tokens"] == isolation.BUDGET_MAX_TOKENS
    assert body["messages"][0]["content"].startswith("word word word\n")


# -- a gateway on 127.0.0.1 ----------------------------------------------------------------------------


class Gateway:
    """What the fake AI gateway was configured with and what it saw."""

    def __init__(self, store: KeyStore, *, budget: int | None = BUDGET.tokens, cost: int = 40,
                 usage: bool = True) -> None:
        self.store = store
        self.budget = budget
        self.cost = cost
        self.usage = usage
        self.spent = 0
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def answer(self, host: str, auth: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | str]:
        if not auth.startswith("Bearer "):
            return 401, "Jwt is missing"
        try:
            claims = verify_token(self.store, auth.removeprefix("Bearer "), tenant=TENANT)
        except errors.JoseError:
            return 401, "Jwt issuer is not configured"
        if claims["sub"] not in CALLERS or host != "tenant-a.ai.example.com":
            return 403, "RBAC: access denied"
        if body.get("model") not in ALLOWED:
            return 404, "No matching route found. It could be that there's no AIGatewayRoute"
        with self.lock:
            if self.budget is not None and self.spent >= self.budget:
                return 429, "Too Many Requests"
            self.spent += self.cost
        usage = {"prompt_tokens": self.cost - 4, "completion_tokens": 4, "total_tokens": self.cost}
        return 200, {"choices": [{"message": {"content": "Hello."}}], **({"usage": usage} if self.usage else {})}


def handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            gateway.seen.append({"host": self.headers["Host"], "path": self.path, "body": body})
            status, answer = gateway.answer(self.headers["Host"], self.headers.get("Authorization", ""), body)
            self.reply(status, json.dumps(answer).encode() if isinstance(answer, dict) else answer.encode())

    return Handler


@pytest.fixture
def gateway(store: KeyStore) -> Gateway:
    return Gateway(store)


@pytest.fixture
def served(gateway: Gateway) -> Iterator[str]:
    with http_server(handler(gateway)) as url:
        yield url


def test_every_case_answers_as_the_gateway_does(store: KeyStore, gateway: Gateway, served: str) -> None:
    probes = isolation.run_ai(served, cases_for(store), host="tenant-a.ai.example.com")
    assert [(p.case.name, p.status, p.ok) for p in probes] == [
        ("no token", 401, True), ("tenant-b's token", 401, True), ("not a caller", 403, True),
        ("model not allowed", 404, True), ("valid", 200, True), ("over budget", 429, True)]
    # 1 valid request spent 40 of the 200, so 4 more are admitted and the 5th is refused.
    assert probes[-1].detail == "429 after 5 requests, 160 total tokens spent in this minute"
    assert {s["host"] for s in gateway.seen} == {"tenant-a.ai.example.com"}
    assert {s["path"] for s in gateway.seen} == {"/v1/chat/completions"}
    budget_bodies = [s["body"] for s in gateway.seen[5:]]
    assert len(budget_bodies) == 5 and all(b["max_tokens"] == isolation.BUDGET_MAX_TOKENS for b in budget_bodies)


def test_a_404_without_the_route_not_found_body_is_a_mismatch(store: KeyStore) -> None:
    [denied] = [c for c in cases_for(store) if c.expected == 404]
    assert not isolation.Probe(denied, 404, "404 page not found").ok
    assert isolation.Probe(denied, 404, "No matching route found. ...").ok


def test_no_429_within_the_bound_fails_the_case(store: KeyStore, gateway: Gateway, served: str) -> None:
    gateway.budget = None  # a gateway that never enforces the budget
    [over] = [c for c in cases_for(store) if c.budget is not None]
    probe = isolation.exhaust_budget(f"{served}/v1/chat/completions", over, host="tenant-a.ai.example.com")
    assert not probe.ok and probe.status == 200
    # 200 tokens at 40 a request: 5 requests reach the budget, then 2 of slack, and the 8th fails it.
    expected = math.ceil(BUDGET.tokens / gateway.cost) + isolation.BUDGET_SLACK + 1
    assert len(gateway.seen) == expected == 8
    assert probe.error.startswith(f"no 429 after {expected} requests: 320 total tokens spent in one minute, over "
                                  "the budget of 200 total tokens per minute")


def test_an_answer_without_usage_fails_the_case(store: KeyStore, gateway: Gateway, served: str) -> None:
    gateway.usage = False
    [over] = [c for c in cases_for(store) if c.budget is not None]
    probe = isolation.exhaust_budget(f"{served}/v1/chat/completions", over, host="tenant-a.ai.example.com")
    assert not probe.ok and "has no usage" in probe.error and len(gateway.seen) == 1


def test_the_deadline_bounds_a_slow_budget(store: KeyStore, gateway: Gateway, served: str) -> None:
    gateway.budget = None
    ticks = iter(range(0, 10_000, 7))  # each look at the clock: 7 s later
    [over] = [c for c in cases_for(store, budget=isolation.Budget(10**6, "minute")) if c.budget is not None]
    probe = isolation.exhaust_budget(f"{served}/v1/chat/completions", over, host="tenant-a.ai.example.com",
                                     deadline_s=30, clock=lambda: float(next(ticks)))
    assert not probe.ok and probe.error.startswith("no 429 within 30 s (2 requests): at most ")
    assert "--ai-budget-timeout" in probe.error and len(gateway.seen) == 2


def test_a_new_window_starts_the_count_again(store: KeyStore, gateway: Gateway, served: str) -> None:
    gateway.budget = None
    now = [0.0]

    def clock() -> float:
        now[0] += 10.0  # the loop looks twice per request: a new minute every third request
        return now[0]

    [over] = [c for c in cases_for(store) if c.budget is not None]
    probe = isolation.exhaust_budget(f"{served}/v1/chat/completions", over, host="tenant-a.ai.example.com",
                                     deadline_s=600, clock=clock)
    # Never more than 3 requests (120 tokens) in one minute: the bound is never reached, the deadline is.
    assert probe.error.startswith("no 429 within 600 s") and "at most 120 of 200 total tokens per minute" in probe.error


def test_other_answers_end_the_budget_case(store: KeyStore) -> None:
    [over] = [c for c in cases_for(store) if c.budget is not None]
    probe = isolation.exhaust_budget("http://127.0.0.1:9/v1/chat/completions", over, timeout_s=2)
    assert probe.status is None and "no answer" in probe.error and not probe.ok


# -- verify_isolation with both paths ---------------------------------------------------------------------


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings()
    app.keystore(settings).ensure()
    return settings


def answer_as_expected(url: str, cases: list[isolation.Case], **_: Any) -> list[isolation.Probe]:
    """The mesh path (its own tests: test_tenants_isolation.py): every case as the table says."""
    return [isolation.Probe(c, c.expected) for c in cases]


class Ingress(QuietHandler):
    """The Istio ingress in front of an LLM on the AI gateway: its pods refuse anyone but the
    gateway (the ai-gateway-only DENY policy), which Envoy answers 403 "RBAC: access denied"."""

    seen: list[tuple[str, str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append((self.headers["Host"], self.path))
        self.reply(403, b"RBAC: access denied", "text/plain")


def test_verify_isolation_covers_both_paths_in_one_table(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "run", answer_as_expected)
    # tenant-a's smallest budget (tenants/tenant-a.yaml): 20000 total tokens per minute.
    gateway = Gateway(app.keystore(settings), budget=20000, cost=2500)
    out = io.StringIO()
    Ingress.seen = []
    with http_server(handler(gateway)) as url, http_server(Ingress) as ingress:
        probes = app.verify_isolation(settings, Console(file=out, width=250), base_url=ingress,
                                      ai_base_url=url)
    ai = [p for p in probes if p.case.path == isolation.AI_GATEWAY]
    assert len(probes) == 16 + 1 + 6 and len(ai) == 6 and all(p.ok for p in probes)
    # The LLM's own KServe host through the ingress, with a valid token, is refused.
    assert Ingress.seen == [("smollm2-local-tenant-a.example.com", "/openai/v1/chat/completions")]
    [bypass] = [p for p in probes if p.case.name == "OpenAI via the ingress"]
    assert bypass.status == 403 and bypass.case.path == isolation.MESH
    assert ai[-1].detail == "429 after 8 requests, 17500 total tokens spent in this minute"
    assert {s["host"] for s in gateway.seen} == {"tenant-a.ai.example.com"}
    # The model it may not use: the catalog's first OpenAI model tenant-a does not list.
    assert [s["body"]["model"] for s in gateway.seen[:5]] == ["smollm2-local"] * 3 + ["phi-2", "smollm2-local"]
    text = out.getvalue()
    assert "ai-gateway" in text and "mesh" in text and "all 23 cases answered as expected" in text
    assert "token budget is spent" in text


def test_verify_isolation_names_a_missing_forward(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "run", answer_as_expected)
    with pytest.raises(app.TenantsFailed) as caught:
        app.verify_isolation(settings, Console(file=io.StringIO()), base_url="http://127.0.0.1:9",
                             ai_base_url="http://127.0.0.1:9", timeout_s=2)
    message = str(caught.value)
    assert "no token (ai-gateway)" in message and "nothing answers at http://127.0.0.1:9" in message
    assert "port-forward svc/inferbox-ai 8081:80" in message and "--no-ai" in message


def test_without_ai_or_budget(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "run", answer_as_expected)
    probes = app.verify_isolation(settings, Console(file=io.StringIO()), base_url="http://127.0.0.1:9", ai=False)
    assert len(probes) == 16 and all(p.case.path == isolation.MESH for p in probes)
    gateway = Gateway(app.keystore(settings), budget=None)
    with http_server(handler(gateway)) as url, http_server(Ingress) as ingress:
        probes = app.verify_isolation(settings, Console(file=io.StringIO()), base_url=ingress,
                                      ai_base_url=url, ai_budget=False)
    assert probes[-1].skipped and probes[-1].case.skip == "--no-ai-budget" and len(gateway.seen) == 5
    # tenant-c may use no OpenAI model: the AI path is skipped, saying why.
    out = io.StringIO()
    probes = app.verify_isolation(settings, Console(file=out, width=200), base_url="http://127.0.0.1:9",
                                  tenant="tenant-c", other_tenant="tenant-a")
    assert len(probes) == 16 and "AI gateway path not checked: tenant-c may use no OpenAI model" in out.getvalue()
