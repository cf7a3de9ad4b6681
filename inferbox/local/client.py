"""A small HTTP client for KServe's V1 and V2 (open inference protocol) REST endpoints."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inferbox.errors import InferboxError

LOOPBACK = "127.0.0.1"


class PredictError(InferboxError):
    """A prediction request failed; says which endpoint and what the server answered."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def request(port: int, method: str, path: str, body: Any = None, *, timeout_s: float = 30.0,
            host: str = LOOPBACK, headers: Mapping[str, str] | None = None) -> Answer:
    """One request; the body is JSON both ways. Connection errors raise OSError."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {**({"Content-Type": "application/json"} if payload is not None else {}), **(headers or {})}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return Answer(response.status, parsed)


def v1_path(model: str) -> str:
    return f"/v1/models/{model}:predict"


def v2_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def ready_path(model: str) -> str:
    return f"/v2/models/{model}/ready"


def v1_request(instances: list[Any]) -> dict[str, Any]:
    return {"instances": instances}


def v2_request(instances: list[Any]) -> dict[str, Any]:
    """The open-inference-protocol tensor for V1 ``instances`` (row-major, shape from nesting)."""
    shape: list[int] = []
    level: Any = instances
    while isinstance(level, list):
        shape.append(len(level))
        level = level[0] if level else None
    flat = _flatten(instances)
    if all(isinstance(v, bool) for v in flat):
        datatype = "BOOL"
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        datatype = "INT64"
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        datatype = "FP32"
    else:
        datatype = "BYTES"
    return {"inputs": [{"name": "input-0", "shape": shape, "datatype": datatype, "data": flat}]}


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [item for sub in value for item in _flatten(sub)]
    return [value]


def v2_outputs(body: Any) -> list[Any]:
    """The first output tensor's data from a V2 response."""
    try:
        return list(body["outputs"][0]["data"])
    except (KeyError, IndexError, TypeError):
        raise PredictError(f"not a V2 inference response: {body!r}") from None


def is_ready(port: int, model: str, *, timeout_s: float = 2.0) -> bool:
    """The model's V2 readiness endpoint answers ready (connection refused means: not yet)."""
    try:
        answer = request(port, "GET", ready_path(model), timeout_s=timeout_s)
    except (OSError, http.client.HTTPException):  # TimeoutError is an OSError
        return False
    return answer.ok and isinstance(answer.body, dict) and answer.body.get("ready") is True


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now (the server binds it moments later; a clash is reported)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
