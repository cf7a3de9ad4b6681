"""``invoke loadtest --trace``: short real Locust runs against servers on 127.0.0.1 that capture
every request's headers. Each request must carry a valid sampled W3C traceparent with a trace id
of its own and the run's header, and the run's traces.txt must hold exactly the trace ids the
server saw; the summary says how to open them in Jaeger. Plus the pure URL and summary helpers."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from rich.console import Console

from inferbox import PROJECT_ROOT
from inferbox.config import Settings
from inferbox.load import harness, tracing
from inferbox.load.app import run_loadtest
from inferbox.load.profiles import default_profiles_path, load_profiles
from tests.loopback import QuietHandler, http_server
from tests.unit.test_load_openai import FakeLLM, Recorder

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")


class Captured:
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()


def predictor(captured: Captured) -> type[BaseHTTPRequestHandler]:
    """A V1/V2 predictor that answers every row, keeping every request's headers."""

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with captured.lock:
                captured.headers.append({k.lower(): v for k, v in self.headers.items()})
            if "instances" in body:
                answer = {"predictions": [1] * len(body["instances"])}
            else:
                rows = body["inputs"][0]["shape"][0]
                answer = {"outputs": [{"name": "out", "shape": [rows], "datatype": "INT64", "data": [1] * rows}]}
            self.reply(200, json.dumps(answer).encode())

    return Handler


@pytest.fixture
def served() -> Iterator[tuple[str, Captured]]:
    captured = Captured()
    with http_server(predictor(captured)) as url:
        yield url, captured


def profiles(tmp_path: Path, name: str, base: str, **changes: Any) -> Path:
    shipped = yaml.safe_load((PROJECT_ROOT / "load" / "profiles.yaml").read_text())["profiles"]
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump({"schema": 1, "profiles": {name: {**shipped[base], **changes}}}, sort_keys=False))
    return path


def check_traced(headers: list[dict[str, str]], run_dir: Path, run_id: str) -> list[str]:
    """Every request traced and tagged, each its own trace id, all of them in traces.txt."""
    assert headers
    parents = [h.get("traceparent", "") for h in headers]
    assert all(TRACEPARENT.match(p) for p in parents), parents[:3]
    seen = [p.split("-")[1] for p in parents]
    assert len(set(seen)) == len(seen), "a fresh trace id per request"
    assert all(p.split("-")[2] != "0" * 16 for p in parents)
    assert {h.get(tracing.RUN_HEADER) for h in headers} == {run_id}
    recorded = tracing.read_trace_ids(run_dir)
    assert sorted(recorded) == sorted(seen), "traces.txt holds exactly the trace ids sent"
    return recorded


def test_a_traced_run_sends_and_records_sampled_trace_ids(make_settings: Callable[..., Settings], tmp_path: Path,
                                                          served: tuple[str, Captured]) -> None:
    url, captured = served
    path = profiles(tmp_path, "traced", "smoke", duration="5s", maxRequests=40, waitTime={"min": 0, "max": 0},
                    protocols={"v1": 1, "v2": 1})
    out = io.StringIO()
    outcome = run_loadtest(make_settings(), "sklearn-iris", None, "traced", host=url, profiles_path=path,
                           trace=True, console=Console(file=out, width=400))
    assert outcome is not None
    run_dir = outcome.run_dir
    config = json.loads((run_dir / harness.CONFIG_FILE).read_text())
    assert config["trace_run_id"] == run_dir.name
    recorded = check_traced(captured.headers, run_dir, run_dir.name)
    assert len(recorded) == outcome.summary["requests"]["count"] == 40

    block = outcome.summary["tracing"]
    assert (block["run_id"], block["header"], block["requests"], block["file"]) == (
        run_dir.name, "x-inferbox-loadtest", 40, "traces.txt")
    assert block["jaeger"]["first_trace"] == f"http://127.0.0.1:16686/trace/{recorded[0]}"
    search = urlsplit(block["jaeger"]["search"])
    query = {k: v[0] for k, v in parse_qs(search.query).items()}
    assert (search.netloc, search.path) == ("127.0.0.1:16686", "/search")
    assert json.loads(query["tags"]) == {"inferbox.loadtest": run_dir.name}
    assert query["lookback"] == "custom" and int(query["start"]) < int(query["end"])
    printed = out.getvalue()
    assert f"http://127.0.0.1:16686/trace/{recorded[0]}" in printed and block["jaeger"]["search"] in printed
    assert "invoke dashboards" in printed and str(run_dir / "traces.txt") in printed
    assert "outside the mesh" in printed  # --host a local server: no mesh to record spans


def test_workers_ship_their_trace_ids_to_the_master(make_settings: Callable[..., Settings], tmp_path: Path,
                                                    served: tuple[str, Captured]) -> None:
    url, captured = served
    path = profiles(tmp_path, "traced", "smoke", duration="4s", maxRequests=30, waitTime={"min": 0, "max": 0.05})
    outcome = run_loadtest(make_settings(), "sklearn-iris", None, "traced", host=url, profiles_path=path, workers=2,
                           trace=True, console=Console(file=io.StringIO()))
    assert outcome is not None and outcome.summary["workers"] == 2
    recorded = check_traced(captured.headers, outcome.run_dir, outcome.run_dir.name)
    assert outcome.summary["tracing"]["requests"] == len(recorded) == len(captured.headers)


def test_streamed_chats_are_traced_too(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    class Chat(FakeLLM):
        def do_POST(self) -> None:
            with Chat.lock:
                Chat.headers.append({k.lower(): v for k, v in self.headers.items()})
            super().do_POST()

    Chat.lock, Chat.headers = threading.Lock(), []  # type: ignore[attr-defined]
    Chat.recorder = Recorder()  # type: ignore[attr-defined]
    path = profiles(tmp_path, "chat", "chat-smoke", duration="3s", users=2, spawnRate=2, maxRequests=12,
                    waitTime={"min": 0, "max": 0}, maxTokens={"min": 8, "max": 8})
    with http_server(Chat) as url:
        outcome = run_loadtest(make_settings(), "qwen-small", None, "chat", host=url, profiles_path=path,
                               trace=True, console=Console(file=io.StringIO()))
    assert outcome is not None
    check_traced(Chat.headers, outcome.run_dir, outcome.run_dir.name)  # type: ignore[attr-defined]


def test_an_untraced_run_sends_no_trace_context(make_settings: Callable[..., Settings], tmp_path: Path,
                                               served: tuple[str, Captured]) -> None:
    url, captured = served
    path = profiles(tmp_path, "plain", "smoke", duration="2s", maxRequests=10, waitTime={"min": 0, "max": 0})
    outcome = run_loadtest(make_settings(), "sklearn-iris", None, "plain", host=url, profiles_path=path,
                           console=Console(file=io.StringIO()))
    assert outcome is not None and "tracing" not in outcome.summary
    assert captured.headers and not any("traceparent" in h or tracing.RUN_HEADER in h for h in captured.headers)
    assert not (outcome.run_dir / "traces.txt").exists()
    assert json.loads((outcome.run_dir / harness.CONFIG_FILE).read_text())["trace_run_id"] is None


# -- pure ---------------------------------------------------------------------------------------------------


def test_jaeger_urls() -> None:
    assert tracing.trace_url("ab" * 16) == f"http://127.0.0.1:16686/trace/{'ab' * 16}"
    url = tracing.search_url("20260101T000000Z-m-p", start_s=1000.0, end_s=1010.0)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {"service": "istio-ingressgateway.istio-ingress",
                     "tags": '{"inferbox.loadtest":"20260101T000000Z-m-p"}', "limit": "100",
                     "lookback": "custom", "start": str(940 * 10**6), "end": str(1070 * 10**6)}
    assert "lookback" not in tracing.search_url("r")


def test_summary_lines(tmp_path: Path) -> None:
    assert tracing.summary_block({"requests": {}}) is None
    assert tracing.lines({"target": "cluster"}, tmp_path) == []
    (tmp_path / "traces.txt").write_text("a" * 32 + "\n" + "b" * 32 + "\n")
    block = tracing.summary_block({"tracing": {"run_id": "r1", "header": tracing.RUN_HEADER, "requests": 2,
                                               "file": "traces.txt"}, "started": 1.0, "finished": 2.0}, tmp_path)
    assert block is not None and block["jaeger"]["first_trace"] == tracing.trace_url("a" * 32)
    lines = tracing.lines({"target": "cluster", "tracing": block}, tmp_path)
    assert lines[0].startswith("traces: 2 requests sent sampled") and "x-inferbox-loadtest: r1" in lines[0]
    assert not any("outside the mesh" in line for line in lines)
    assert lines[-1].endswith(block["jaeger"]["search"])


def test_shipped_profiles_still_configure_no_tracing(root: Path) -> None:
    profile = load_profiles(default_profiles_path(root)).profiles["smoke"]
    spec = harness.RunSpec(profile=profile, model="m", base_url="http://127.0.0.1:1", host_header=None, workers=0,
                           run_dir=root, load_dir=root / "load")
    assert harness.locust_config(spec, "/out")["trace_run_id"] is None
    traced = harness.RunSpec(**{**spec.__dict__, "trace_run_id": "run-1"})
    assert harness.locust_config(traced, "/out")["trace_run_id"] == "run-1"
