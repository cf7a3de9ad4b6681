"""The streaming chat user and the tenant's token, against real HTTP servers on 127.0.0.1.

No LLM can run here, so a small server speaks the OpenAI streaming protocol the way KServe's
Hugging Face server does (server-sent events, chunked, ``data: [DONE]``), with a known delay
before the first token and between tokens; the custom metrics must find those delays. A second
server plays the platform's gateway: it must see the tenant's JWT and the routing Host header.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from inferbox import PROJECT_ROOT
from inferbox.config import Settings
from inferbox.load.app import run_loadtest
from inferbox.tenants.keys import KeyStore, verify_token

FIRST_TOKEN_S = 0.05
BETWEEN_TOKENS_S = 0.01
TOKENS = 8


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add(self, **seen: Any) -> None:
        with self.lock:
            self.requests.append(seen)


def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    handler.recorder = recorder  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    finally:
        server.shutdown()
        server.server_close()


class FakeLLM(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.recorder.add(path=self.path, body=body, auth=self.headers.get("Authorization"))  # type: ignore[attr-defined]
        if self.path != "/openai/v1/chat/completions" or body.get("stream") is not True:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        time.sleep(FIRST_TOKEN_S)
        for index in range(TOKENS):
            if index:
                time.sleep(BETWEEN_TOKENS_S)
            chunk = {"id": "x", "object": "chat.completion.chunk", "model": body["model"],
                     "choices": [{"index": 0, "delta": {"content": f"tok{index} "}, "finish_reason": None}]}
            self._event(json.dumps(chunk))
        self._event(json.dumps({"id": "x", "choices": [], "usage": {"completion_tokens": TOKENS}}))
        self._event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")

    def _event(self, data: str) -> None:
        payload = f"data: {data}\n\n".encode()
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()


class FakeGateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.recorder.add(path=self.path, host=self.headers.get("Host"),  # type: ignore[attr-defined]
                          auth=self.headers.get("Authorization"), rows=len(body.get("instances") or []))
        answer = json.dumps({"predictions": [1] * len(body["instances"])}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def llm() -> Iterator[tuple[str, Recorder]]:
    yield from serve(FakeLLM)


@pytest.fixture
def gateway() -> Iterator[tuple[str, Recorder]]:
    yield from serve(FakeGateway)


def profiles(tmp_path: Path, name: str, changes: dict[str, Any]) -> Path:
    shipped = yaml.safe_load((PROJECT_ROOT / "load" / "profiles.yaml").read_text())["profiles"]
    data = {"schema": 1, "profiles": {name: {**shipped[changes.pop("base")], **changes}}}
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_streaming_chat_metrics_and_token(make_settings: Callable[..., Settings], tmp_path: Path,
                                          llm: tuple[str, Recorder]) -> None:
    url, seen = llm
    settings = make_settings()
    store = KeyStore.for_state_dir(settings.state_dir)
    store.ensure()
    path = profiles(tmp_path, "chat", {"base": "chat-smoke", "duration": "4s", "users": 2, "spawnRate": 2,
                                       "waitTime": {"min": 0, "max": 0.05}, "maxTokens": {"min": 8, "max": 16},
                                       "slo": {"ttftP95Ms": 2000, "itlP95Ms": 200, "minTokensPerS": 10,
                                               "maxErrorRate": 0}})
    out = io.StringIO()
    outcome = run_loadtest(settings, "qwen-small", "tenant-a", "chat", host=url, profiles_path=path,
                           console=Console(file=out, width=160))
    assert outcome is not None and outcome.passed, out.getvalue()
    summary = outcome.summary

    requests = summary["requests"]
    assert requests["count"] == len(seen.requests) > 0 and requests["failures"] == 0
    # The request is timed to the last byte: the first token's delay plus the gaps between tokens.
    assert requests["percentiles"]["p50"] >= (FIRST_TOKEN_S + (TOKENS - 1) * BETWEEN_TOKENS_S) * 1000 * 0.9
    metrics = summary["custom_metrics"]
    assert set(metrics) == {"openai:ttft_ms", "openai:itl_ms", "openai:tokens_per_s", "openai:completion_tokens"}
    assert metrics["openai:ttft_ms"]["count"] == requests["count"], "one TTFT sample per response"
    assert FIRST_TOKEN_S * 1000 * 0.9 <= metrics["openai:ttft_ms"]["percentiles"]["p50"] < 1000
    assert metrics["openai:itl_ms"]["count"] == requests["count"] * (TOKENS - 1)
    assert BETWEEN_TOKENS_S * 1000 * 0.9 <= metrics["openai:itl_ms"]["percentiles"]["p50"] < 200
    assert 10 < metrics["openai:tokens_per_s"]["percentiles"]["p50"] <= 1.1 / BETWEEN_TOKENS_S
    assert summary["output_tokens"]["total"] == TOKENS * requests["count"]
    assert {v["slo"] for v in summary["slo"]} == {"maxErrorRate", "ttftP95Ms", "itlP95Ms", "minTokensPerS"}
    assert (outcome.run_dir / "llm.png").is_file()
    assert "openai:ttft_ms" in out.getvalue()

    bodies = [r["body"] for r in seen.requests]
    assert all(b["stream"] is True and b["model"] == "qwen-small" and 8 <= b["max_tokens"] <= 16 for b in bodies)
    assert len({json.dumps(b["messages"]) for b in bodies}) > 1, "prompts vary"
    tokens = {r["auth"] for r in seen.requests}
    assert len(tokens) == 1
    claims = verify_token(store, tokens.pop().removeprefix("Bearer "), tenant="tenant-a")
    assert claims["sub"] == "iris-web" and claims["exp"] - claims["iat"] >= 4


def test_cluster_target_routes_by_host_and_sends_the_tenants_jwt(make_settings: Callable[..., Settings],
                                                                  tmp_path: Path,
                                                                  gateway: tuple[str, Recorder]) -> None:
    url, seen = gateway
    settings = make_settings()
    KeyStore.for_state_dir(settings.state_dir).ensure()
    path = profiles(tmp_path, "via-gateway", {"base": "smoke", "duration": "2s"})
    outcome = run_loadtest(settings, None, None, "via-gateway", target="cluster", host=url, profiles_path=path,
                           console=Console(file=io.StringIO()))
    assert outcome is not None and outcome.summary["tenant"] == "tenant-a"  # the profile's first tenant
    assert seen.requests and {r["host"] for r in seen.requests} == {"sklearn-iris-tenant-a.example.com"}
    assert {r["path"] for r in seen.requests} == {"/v1/models/sklearn-iris:predict"}
    assert all(r["auth"].startswith("Bearer ey") for r in seen.requests)
    assert {r["rows"] for r in seen.requests} <= {1, 2, 3, 4} and len({r["rows"] for r in seen.requests}) > 1
    token = seen.requests[0]["auth"].removeprefix("Bearer ")
    written = [p for p in outcome.run_dir.iterdir() if p.suffix in (".json", ".txt", ".log", ".html", ".csv")]
    assert written and not [p.name for p in written if token in p.read_text(errors="replace")], \
        "the token never reaches a file"
