"""Verdicts, comparison and the report: SLO judgement, plots from a stats history, GPU metrics from a
real (loopback) Prometheus-compatible HTTP API."""

from __future__ import annotations

import csv
import json
import math
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from inferbox import PROJECT_ROOT
from inferbox.errors import ConfigError
from inferbox.load import report
from inferbox.load.profiles import load_profiles
from inferbox.load.summary import build_summary, comparison, find_summary, load_summary, write_summary
from tests.browser import check_page, chromium
from tests.loopback import http_server

PROFILES = load_profiles(PROJECT_ROOT / "load" / "profiles.yaml").profiles
COLUMNS = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", "50%", "66%", "75%", "80%", "90%",
           "95%", "98%", "99%", "99.9%", "99.99%", "100%", "Total Request Count", "Total Failure Count",
           "Total Median Response Time", "Total Average Response Time", "Total Min Response Time",
           "Total Max Response Time", "Total Average Content Size"]


def block(count: int, failures: int = 0, p50: float = 10, p95: float = 20, p99: float = 30,
          rps: float = 50.0) -> dict[str, Any]:
    return {"count": count, "failures": failures, "rps": rps, "avg": p50, "min": 1, "max": p99, "sum": p50 * count,
            "percentiles": {"p50": p50, "p95": p95, "p99": p99}, "avg_content_length": 10}


def result(requests: dict[str, Any], metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"requests": requests, "endpoints": {"POST /x": requests}, "metrics": metrics or {}, "duration_s": 10.0,
            "stop_reason": "run time reached", "errors": []}


def summary_of(profile: str, res: dict[str, Any], run: str = "run-1") -> dict[str, Any]:
    return build_summary(res, run=run, profile=PROFILES[profile], model="m", target="local",
                         base_url="http://127.0.0.1:1", tenant=None, workers=0, versions={"locust": "x"},
                         started="2026-01-01T00:00:00+00:00", finished="2026-01-01T00:00:10+00:00")


# -- verdicts ------------------------------------------------------------------------------------
def test_thresholds_are_judged_in_their_direction() -> None:
    summary = summary_of("smoke", result(block(500, failures=0, p95=300, p99=400, rps=4.0)))
    verdicts = {v["slo"]: v["ok"] for v in summary["slo"]}
    assert verdicts == {"p95Ms": False, "p99Ms": True, "maxErrorRate": True, "minRps": False}
    assert summary["passed"] is False


def test_no_requests_means_breached_not_passed() -> None:
    summary = summary_of("smoke", result({**block(0), "percentiles": {}}))
    assert summary["requests"]["error_rate"] is None
    assert {v["slo"]: (v["ok"], v["observed"]) for v in summary["slo"]} == {
        "p95Ms": (False, None), "p99Ms": (False, None), "maxErrorRate": (False, None), "minRps": (False, None)}


def test_llm_thresholds_use_the_custom_metrics() -> None:
    metrics = {"openai:ttft_ms": block(20, p95=2500), "openai:itl_ms": block(400, p95=50),
               "openai:tokens_per_s": block(20, p50=40), "openai:completion_tokens": block(20)}
    summary = summary_of("chat-smoke", result(block(20, p95=9000, rps=0.5), metrics))
    verdicts = {v["slo"]: v["ok"] for v in summary["slo"]}
    assert verdicts == {"p95Ms": True, "maxErrorRate": True, "ttftP95Ms": False, "itlP95Ms": True,
                        "minTokensPerS": True}
    assert summary["output_tokens"]["total"] == 200


def test_error_rate_is_failures_over_requests() -> None:
    summary = summary_of("steady", result(block(1000, failures=2)))
    assert summary["requests"]["error_rate"] == 0.002
    assert next(v for v in summary["slo"] if v["slo"] == "maxErrorRate")["ok"] is False


# -- comparison ----------------------------------------------------------------------------------
def test_comparison_says_better_or_worse(tmp_path: Path) -> None:
    before = summary_of("smoke", result(block(100, p95=20, rps=50)), run="old")
    now = summary_of("smoke", result(block(120, p95=10, rps=40)), run="new")
    rows = {r["metric"]: r for r in comparison(now, before)}
    assert rows["p95 (ms)"]["direction"] == "better" and rows["p95 (ms)"]["relative"] == -0.5
    assert rows["throughput (req/s)"]["direction"] == "worse"
    assert "TTFT p95 (ms)" not in rows, "only metrics both runs have"
    run_dir = tmp_path / "loadtests" / "old"
    run_dir.mkdir(parents=True)
    write_summary(run_dir, before)
    assert load_summary(find_summary("old", tmp_path / "loadtests"))["run"] == "old"
    assert find_summary(str(run_dir / "summary.json"), tmp_path) == run_dir / "summary.json"
    with pytest.raises(ConfigError, match=r"compare: no run 'nope'.*latest runs: old"):
        find_summary("nope", tmp_path / "loadtests")


# -- plots and report ----------------------------------------------------------------------------
def write_history(path: Path, *, llm: bool) -> None:
    rows = []
    start = 1_700_000_000
    for second in range(12):
        users = min(4, second + 1)
        names = [("POST", "/openai/v1/chat/completions" if llm else "/v1/models/m:predict")]
        if llm:
            names += [("METRIC", "openai:ttft_ms"), ("METRIC", "openai:itl_ms"), ("METRIC", "openai:tokens_per_s")]
        for kind, name in [*names, ("", "Aggregated")]:
            row = dict.fromkeys(COLUMNS, "0")
            row.update({"Timestamp": str(start + second), "User Count": str(users), "Type": kind, "Name": name,
                        "Requests/s": "40", "Failures/s": "0", "50%": str(10 + second), "95%": str(20 + second),
                        "99%": str(30 + second), "Total Request Count": str(40 * second),
                        "Total Failure Count": str(second // 6)})
            rows.append(row)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def test_plots_and_report_from_a_history(tmp_path: Path) -> None:
    write_history(tmp_path / report.HISTORY_FILE, llm=True)
    summary = summary_of("chat-smoke", result(block(50), {"openai:ttft_ms": block(50)}))
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    path = report.write_report(tmp_path, summary, report.GpuPanel("no GPU metrics (local target)"))
    for name in ("latency.png", "throughput.png", "llm.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name
    assert not (tmp_path / "gpu.png").exists()
    text = path.read_text()
    assert "<img src='llm.png'" in text and "no GPU metrics (local target)" in text
    assert "SLO breached" in text and "openai:ttft_ms" in text
    series = report.read_history(tmp_path / report.HISTORY_FILE)
    p95 = series[("POST", "/openai/v1/chat/completions")].values["95%"]
    assert math.isnan(p95[0]) and p95[1] == 21.0, "no percentile before the first request"
    rates = report.rates(series[("POST", "/openai/v1/chat/completions")], "Total Request Count")
    assert set(rates.values()) == {40.0}, "per-second throughput from the cumulative count"


def test_report_for_docs_keeps_only_small_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    write_history(run / report.HISTORY_FILE, llm=False)
    write_summary(run, summary_of("smoke", result(block(100))))
    (run / "locust.html").write_text("x" * 1_000_000)
    dest = report.copy_for_docs(run, tmp_path / "docs")
    names = {p.name for p in dest.parent.iterdir()}
    assert "locust.html" not in names and {"report.html", "latency.png", "summary.json"} <= names
    assert "href='locust.html'" not in dest.read_text()


class FakePrometheus(BaseHTTPRequestHandler):
    queries: list[dict[str, list[str]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        params = urllib.parse.parse_qs(url.query)
        type(self).queries.append(params)
        start, end, step = float(params["start"][0]), float(params["end"][0]), float(params["step"][0])
        metric = params["query"][0]
        values = [[start + i * step, str(50 + i if "UTIL" in metric else 1024 + i)]
                  for i in range(int((end - start) / step) + 1)]
        body = {"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"__name__": metric, "gpu": "0", "Hostname": "gpu-node-1", "modelName": "NVIDIA L4"},
             "values": values}]}}
        data = json.dumps(body).encode()
        self.send_response(200 if url.path == "/api/v1/query_range" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def prometheus() -> Iterator[str]:
    with http_server(FakePrometheus) as url:
        yield url


def test_gpu_panel_queries_dcgm_over_the_run_window(tmp_path: Path, prometheus: str) -> None:
    FakePrometheus.queries.clear()
    panel = report.gpu_panel(prometheus, 1_700_000_000.0, 1_700_000_060.0, target="cluster")
    assert panel.message is None
    assert {q["query"][0] for q in FakePrometheus.queries} == {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"}
    assert all(q["start"] == ["1700000000.000"] and q["end"] == ["1700000060.000"] for q in FakePrometheus.queries)
    util = panel.series["utilisation (%)"]
    assert util[0][0] == "Hostname=gpu-node-1 gpu=0 modelName=NVIDIA L4" and util[0][1][0] == (0.0, 50.0)
    assert report.plot_gpu(panel, tmp_path) == tmp_path / "gpu.png"


def test_gpu_panel_says_why_there_is_nothing() -> None:
    assert report.gpu_panel(None, 0, 1, target="local").message == "no GPU metrics (local target)"
    assert "pass --prometheus-url" in (report.gpu_panel(None, 0, 1, target="cluster").message or "")
    closed = report.gpu_panel("http://127.0.0.1:9", 0, 60, target="cluster")
    assert (closed.message or "").startswith("GPU metrics unavailable from http://127.0.0.1:9")


# -- the report in a real browser --------------------------------------------------------------------
@pytest.mark.browser
def test_report_renders_in_a_real_browser(tmp_path: Path, prometheus: str) -> None:
    """Every plot (latency, throughput, LLM, GPU) loads and decodes; no console or page errors."""
    chromium()
    write_history(tmp_path / report.HISTORY_FILE, llm=True)
    summary = summary_of("chat-smoke", result(block(50), {"openai:ttft_ms": block(50)}))
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    path = report.write_report(tmp_path, summary, report.gpu_panel(prometheus, 1_700_000_000.0, 1_700_000_060.0,
                                                                   target="cluster"))
    seen = check_page(path)
    assert seen.problems == []
    assert seen.title == "load test run-1"
    assert set(seen.images) == {"latency.png", "throughput.png", "llm.png", "gpu.png"}
    for name, (width, height) in seen.images.items():
        # Every figure is drawn 9 x 3.6 inches at 100 dpi (report._figure).
        assert width >= 900 and height >= 300, name


@pytest.mark.browser
def test_the_browser_check_sees_a_broken_plot(tmp_path: Path) -> None:
    chromium()
    write_history(tmp_path / report.HISTORY_FILE, llm=True)
    summary = summary_of("chat-smoke", result(block(50), {"openai:ttft_ms": block(50)}))
    path = report.write_report(tmp_path, summary, report.GpuPanel("no GPU metrics (local target)"))
    (tmp_path / "llm.png").write_bytes(b"not a png")
    (tmp_path / "throughput.png").unlink()
    problems = "\n".join(check_page(path).problems)
    assert "image llm.png did not load or decode" in problems
    assert "HTTP 404" in problems and "throughput.png" in problems
