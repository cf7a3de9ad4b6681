"""KServe V1 predict: ``POST /v1/models/<model>:predict`` with iris-like ``instances``.

Configuration, bounds and exports: loadkit.py. A response counts as a success only when it is a
200 carrying one prediction per row sent.
"""

from __future__ import annotations

from typing import Any

import loadkit
from locust import FastHttpUser, task


class V1PredictUser(FastHttpUser):
    weight = loadkit.CONFIG.weight("v1") or 1
    wait_time = loadkit.wait_time()

    def on_start(self) -> None:
        self.rng = loadkit.user_rng()
        self.path = f"/v1/models/{loadkit.CONFIG.model}:predict"
        self.request_headers = loadkit.headers()

    @task
    def predict(self) -> None:
        loadkit.CONTROL.spend()
        rows = loadkit.iris_rows(self.rng)
        loadkit.post_judged(self.client, self.path, {"instances": rows}, self.request_headers,
                            lambda response: check(response, len(rows)))


def check(response: Any, rows: int) -> str | None:
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {(response.text or '')[:200]}"
    try:
        predictions = response.json()["predictions"]
    except (ValueError, KeyError, TypeError):
        return f"not a V1 predict response: {(response.text or '')[:200]}"
    if len(predictions) != rows:
        return f"{len(predictions)} predictions for {rows} rows"
    return None
