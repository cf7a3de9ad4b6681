"""Open inference protocol (V2): ``POST /v2/models/<model>/infer`` with an FP32 ``[rows, 4]`` tensor.

Configuration, bounds and exports: loadkit.py. A response counts as a success only when it is a
200 whose first output tensor holds one value per row sent.
"""

from __future__ import annotations

from typing import Any

import loadkit
from locust import FastHttpUser, task


class V2InferUser(FastHttpUser):
    weight = loadkit.CONFIG.weight("v2") or 1
    wait_time = loadkit.wait_time()

    def on_start(self) -> None:
        self.rng = loadkit.user_rng()
        self.path = f"/v2/models/{loadkit.CONFIG.model}/infer"
        self.request_headers = loadkit.headers()

    @task
    def infer(self) -> None:
        loadkit.CONTROL.spend()
        rows = loadkit.iris_rows(self.rng)
        loadkit.post_judged(self.client, self.path, loadkit.v2_body(rows), self.request_headers,
                            lambda response: check(response, len(rows)))


def check(response: Any, rows: int) -> str | None:
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {(response.text or '')[:200]}"
    try:
        data = response.json()["outputs"][0]["data"]
    except (ValueError, KeyError, IndexError, TypeError):
        return f"not a V2 inference response: {(response.text or '')[:200]}"
    if len(data) != rows:
        return f"{len(data)} outputs for {rows} rows"
    return None
