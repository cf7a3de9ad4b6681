"""``invoke loadtest --trace``: every request carries a sampled W3C trace context, and the run
says where to find the traces.

Each request Locust sends gets a ``traceparent`` (W3C Trace Context, version 00) with a fresh
trace id and the sampled flag (01), so the mesh (Istio's Telemetry) and the AI gateway record its
spans whatever their sampling percentage, and ``x-inferbox-loadtest: <run>`` naming the run.
loadkit.py (the locustfiles' side) writes every trace id it sent to ``traces.txt`` in the run
folder, one a line; this module is the inferbox side: the Jaeger URLs where ``invoke dashboards``
forwards the query UI (http://127.0.0.1:16686) and the lines the summary prints.

Spans exist only where a request passed the mesh or the AI gateway (``--target cluster``,
``--in-cluster``): a local predictor is outside both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from inferbox.bootstrap.phases import JAEGER_QUERY_PORT

TRACES_FILE = "traces.txt"  # loadkit.TRACES_FILE
RUN_HEADER = "x-inferbox-loadtest"  # loadkit.RUN_HEADER
# The span tag the mesh records the run header as (Istio Telemetry customTags), searched by.
RUN_TAG = "inferbox.loadtest"
TRACEPARENT = re.compile(r"^00-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})-01$")
JAEGER_URL = f"http://127.0.0.1:{JAEGER_QUERY_PORT}"
# The first proxy a request meets on the platform, as Istio names its spans' service
# (<canonical service>.<namespace>): the ingress gateway; an LLM's requests meet the AI gateway's
# Envoy first, whose spans the EnvoyProxy names (inferbox.aigateway.TRACE_SERVICE).
ENTRY_SERVICE = "istio-ingressgateway.istio-ingress"


def trace_url(trace_id: str, jaeger: str = JAEGER_URL) -> str:
    return f"{jaeger}/trace/{trace_id}"


def search_url(run_id: str, *, start_s: float | None = None, end_s: float | None = None,
               service: str = ENTRY_SERVICE, jaeger: str = JAEGER_URL, limit: int = 100) -> str:
    """Jaeger's search for the run's traces: the entry service's spans tagged with the run, in
    the run's time window (microseconds, a minute either side) when known."""
    query: dict[str, Any] = {"service": service, "tags": json.dumps({RUN_TAG: run_id}, separators=(",", ":")),
                             "limit": limit}
    if start_s is not None and end_s is not None:
        query |= {"lookback": "custom", "start": int((start_s - 60) * 1e6), "end": int((end_s + 60) * 1e6)}
    return f"{jaeger}/search?{urlencode(query)}"


def read_trace_ids(run_dir: Path) -> list[str]:
    """The trace ids the run sent, in the order they were written (empty without a file)."""
    try:
        text = (run_dir / TRACES_FILE).read_text()
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def summary_block(result: dict[str, Any], run_dir: Path | None = None, *,
                  service: str = ENTRY_SERVICE) -> dict[str, Any] | None:
    """summary.json's ``tracing``: what was tagged, how many, where the ids are, and the URLs
    (searching the spans of ``service``, the first proxy the requests met)."""
    tracing = result.get("tracing")
    if not tracing:
        return None
    ids = read_trace_ids(run_dir) if run_dir is not None else []
    block = {**tracing, "jaeger": {
        "search": search_url(tracing["run_id"], start_s=result.get("started"), end_s=result.get("finished"),
                             service=service),
        "first_trace": trace_url(ids[0]) if ids else None,
    }}
    return block


def lines(summary: dict[str, Any], run_dir: Path) -> list[str]:
    """What the summary prints about the traces (nothing for a run without --trace)."""
    block = summary.get("tracing")
    if not block:
        return []
    out = [f"traces: {block.get('requests', 0)} requests sent sampled (traceparent ...-01), each with "
           f"{block['header']}: {block['run_id']}; their trace ids: {run_dir / block['file']}"]
    if summary.get("target") == "local":
        out.append("  (a local predictor is outside the mesh: only requests through the platform are traced)")
    jaeger = block.get("jaeger") or {}
    if jaeger.get("first_trace"):
        out.append(f"  open one in Jaeger (after `{_invoke('dashboards')}`): {jaeger['first_trace']}")
    out.append(f"  all of this run (tag {RUN_TAG}={block['run_id']}): {jaeger.get('search')}")
    return out


def _invoke(args: str) -> str:
    from inferbox.hints import invoke

    return invoke(args)
