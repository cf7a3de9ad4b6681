"""OpenAI-compatible chat completions, streamed: ``POST /openai/v1/chat/completions`` (KServe's route;
``/v1/chat/completions`` on the local target's vLLM server) with ``stream: true``.

KServe's Hugging Face server and vLLM answer with server-sent events, one ``data: {chunk}`` line per
token group, ending with ``data: [DONE]``. Besides the request itself (timed to the last byte),
each response records custom metrics (loadkit.py):

* ``openai:ttft_ms`` time to first token: from sending to the first chunk carrying content;
* ``openai:itl_ms`` inter-token latency: every gap between two content chunks;
* ``openai:tokens_per_s`` the response's streaming rate: tokens after the first / time after it;
* ``openai:completion_tokens`` tokens generated (the server's ``usage`` when it sends one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import loadkit
from locust import FastHttpUser, task

PATH = f"{loadkit.CONFIG.openai_prefix}/v1/chat/completions"


class OpenAIChatUser(FastHttpUser):
    weight = loadkit.CONFIG.weight("openai") or 1
    wait_time = loadkit.wait_time()
    # A streamed completion takes seconds: the client must not give up before the server does.
    network_timeout = 120.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.rng = loadkit.user_rng()
        self.request_headers = {**loadkit.headers(), "Accept": "text/event-stream"}

    @task
    def chat(self) -> None:
        loadkit.CONTROL.spend()
        body = loadkit.chat_body(self.rng)
        started = time.perf_counter()
        with self.client.post(PATH, data=json.dumps(body), headers=loadkit.traced(self.request_headers), stream=True,
                              catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            stream = Stream(started)
            try:
                for line in lines(response):
                    stream.feed(line)
            except Exception as exc:  # noqa: BLE001 - any break of the stream fails this request
                response.failure(f"stream broken after {stream.tokens} tokens: {exc!r}")
                return
            finished = time.perf_counter()
            # Locust timed the request to its headers; a streamed answer ends at its last byte.
            response.request_meta["response_time"] = (finished - started) * 1000
            response.request_meta["response_length"] = stream.length
            problem = stream.problem()
            if problem:
                response.failure(problem)
                return
            response.success()
        stream.record(self.environment)


def lines(response: Any) -> Iterator[bytes]:
    """The body line by line, each as soon as it arrives.

    FastResponse.iter_content(n) (and Locust's iter_lines, built on it) waits until n bytes have
    arrived, which would time every token of a short answer at the end of the stream; the
    geventhttpclient response under it reads a line as soon as the line is complete.
    """
    raw = getattr(response, "_response", None)
    if raw is None or not hasattr(raw, "readline"):
        yield from response.iter_content(chunk_size=1, decode_content=False)
        return
    while line := raw.readline(b"\n"):
        yield line


class Stream:
    """Server-sent events parsed as they arrive, with the arrival time of every content chunk."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.buffer = b""
        self.length = 0
        self.arrivals: list[float] = []
        self.usage_tokens: int | None = None
        self.done = False
        self.error: str | None = None

    def feed(self, chunk: bytes | str) -> None:
        now = time.perf_counter()
        data = chunk.encode() if isinstance(chunk, str) else chunk
        self.length += len(data)
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self._line(line.strip(), now)

    def _line(self, line: bytes, now: float) -> None:
        if not line.startswith(b"data:"):
            return  # blank separators, comments, event names
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            event: dict[str, Any] = json.loads(payload)
        except ValueError:
            self.error = f"not JSON in the event stream: {payload[:100]!r}"
            return
        if "error" in event:
            self.error = f"server error in stream: {str(event['error'])[:200]}"
        usage = event.get("usage") or {}
        if usage.get("completion_tokens") is not None:
            self.usage_tokens = int(usage["completion_tokens"])
        for choice in event.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                self.arrivals.append(now)
                break

    @property
    def tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else len(self.arrivals)

    def problem(self) -> str | None:
        if self.error:
            return self.error
        if not self.done:
            return "the stream ended without data: [DONE]"
        if not self.arrivals:
            return "no content in the stream"
        return None

    def record(self, environment: Any) -> None:
        first, last = self.arrivals[0], self.arrivals[-1]
        loadkit.metric(environment, loadkit.TTFT, (first - self.started) * 1000)
        for before, after in zip(self.arrivals, self.arrivals[1:], strict=False):
            loadkit.metric(environment, loadkit.ITL, (after - before) * 1000)
        if last > first and self.tokens > 1:
            loadkit.metric(environment, loadkit.TOKENS_PER_S, (self.tokens - 1) / (last - first))
        loadkit.metric(environment, loadkit.COMPLETION_TOKENS, self.tokens)
