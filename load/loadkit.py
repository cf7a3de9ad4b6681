"""What inferbox's locustfiles share: the run's configuration, payloads, bounds, custom metrics, exports.

Imported by ``v1_predict.py``, ``v2_infer.py``, ``openai_chat.py`` and ``step_shape.py`` (Locust
puts this folder on ``sys.path`` when it loads them). inferbox writes the run's configuration to
a JSON file named by ``INFERBOX_LOAD_CONFIG``; the tenant's JWT comes from ``INFERBOX_LOAD_TOKEN``
(an environment variable, so it is never on a command line or in a file). Started by hand
(``locust -f load/v1_predict.py --host http://127.0.0.1:PORT``) the defaults below apply, and the
run is still bounded: 60 s and 10,000 requests.

Bounds, enforced here whatever Locust is told:

* requests: every user takes a request from its process's budget before sending one (a worker's
  budget is its share of ``max_requests``); an empty budget stops the user, and the master (or
  the single process) ends the run once ``max_requests`` have been counted;
* time: ``--run-time`` (or the step shape's end), and a backstop that ends the run 30 s later.

Traced runs (``invoke loadtest --trace``: ``trace_run_id`` in the configuration): every request
gets a W3C ``traceparent`` with a fresh trace id and the sampled flag (01), and
``x-inferbox-loadtest: <run id>``; the master (or the single process) appends every trace id sent
to ``traces.txt`` in the output folder, one a line (workers ship theirs with their stats).

The master (or the single process) writes ``progress.json`` every second while the run lasts and
``locust-result.json`` at the end: request totals and percentiles over the real requests only,
every endpoint, every custom metric. The percentiles there are exact: every sample is kept at full
precision (a run is bounded, so the samples are too; workers send theirs to the master with their
stats), while Locust's own figures are rounded to about two significant digits (10 ms steps from
100 ms, 100 ms steps from 1 s), which could pass an SLO the run broke. Locust's are kept beside
them as ``percentiles_locust``. Custom metrics are sent through ``events.request`` with the
request type ``METRIC`` (so Locust's CSV and HTML show them too) and are never counted as requests.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust import between, constant, events
from locust import stats as locust_stats
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import StatsEntry

CONFIG_ENV = "INFERBOX_LOAD_CONFIG"
TOKEN_ENV = "INFERBOX_LOAD_TOKEN"
RESULT_FILE = "locust-result.json"
PROGRESS_FILE = "progress.json"
# request_type of custom metrics: shown by Locust, never counted as requests by inferbox.
METRIC = "METRIC"
TTFT = "openai:ttft_ms"
ITL = "openai:itl_ms"
TOKENS_PER_S = "openai:tokens_per_s"
COMPLETION_TOKENS = "openai:completion_tokens"
BACKSTOP_GRACE_S = 30.0
TRACES_FILE = "traces.txt"
RUN_HEADER = "x-inferbox-loadtest"
PERCENTILES = (0.5, 0.66, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)

# Fisher's iris data, per class: feature means and standard deviations (sepal length, sepal width,
# petal length, petal width, in cm). Requests draw rows around these, so a model sees all classes.
IRIS_CLASSES = (
    ((5.006, 3.428, 1.462, 0.246), (0.352, 0.379, 0.174, 0.105)),  # setosa
    ((5.936, 2.770, 4.260, 1.326), (0.516, 0.314, 0.470, 0.198)),  # versicolor
    ((6.588, 2.974, 5.552, 2.026), (0.636, 0.322, 0.552, 0.275)),  # virginica
)

SYSTEM_PROMPTS = (
    "You are a concise assistant.",
    "You are a helpful assistant for a platform team. Answer in plain language.",
    "You explain technical topics to beginners, with one short example.",
)
PROMPTS = (
    "Explain what a Kubernetes readiness probe is in two sentences.",
    "Write a haiku about load testing.",
    "What is the difference between p95 and p99 latency, and why do both matter?",
    "Summarise the CAP theorem for a new engineer.",
    "Give three tips for writing a good incident postmortem.",
    "Translate 'the model is ready to serve traffic' into French and German.",
    "List five fruits that are rich in vitamin C, with one fact about each.",
    "Why does batching requests increase GPU throughput? Keep it short.",
    "Write a Python function that checks whether a string is a palindrome.",
    "What should a runbook for a failing model server contain?",
    "Describe the iris flower data set in one paragraph.",
    "Compose a short, friendly reminder to rotate API keys.",
    "What is time to first token, and what affects it in an LLM server?",
    "Suggest a name for a small inference platform and explain it in one line.",
)
FOLLOW_UPS = ("Make it shorter.", "Now give an example.", "Explain it to a child.", "Add one caveat.")


def _fine_buckets(response_time: float) -> float:
    """Keep 0.1 ms resolution below 10 ms (loopback latencies); Locust's own rounding above."""
    if response_time < 10:
        return round(response_time, 1)
    return _LOCUST_BUCKETS(response_time)


_LOCUST_BUCKETS = locust_stats.bucket_response_time
# Locust documents this module-level function as the place to change its histogram buckets.
locust_stats.bucket_response_time = _fine_buckets  # type: ignore[assignment]


@dataclass(frozen=True)
class Config:
    model: str = "sklearn-iris"
    protocols: dict[str, int] = field(default_factory=lambda: {"v1": 1})
    wait_min_s: float = 0.0
    wait_max_s: float = 0.0
    rows_min: int = 1
    rows_max: int = 1
    tokens_min: int = 64
    tokens_max: int = 64
    max_requests: int = 10_000
    max_duration_s: float = 60.0
    workers: int = 0
    host_header: str | None = None
    steps: list[list[float]] = field(default_factory=list)  # [users, spawn rate, duration s] each
    output_dir: str | None = None
    openai_model: str | None = None
    # KServe mounts the OpenAI routes under /openai; vLLM's own server (the local target) at the root.
    openai_prefix: str = "/openai"
    trace_run_id: str | None = None  # set: every request carries a sampled traceparent and the run header

    @classmethod
    def load(cls) -> Config:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            return cls()
        data = json.loads(Path(path).read_text())
        known = {name for name in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}")
        return cls(**data)

    def weight(self, protocol: str) -> int:
        return int(self.protocols.get(protocol, 0))


CONFIG = Config.load()


def wait_time() -> Any:
    if CONFIG.wait_max_s <= 0:
        return constant(0)
    return between(CONFIG.wait_min_s, CONFIG.wait_max_s)


def headers() -> dict[str, str]:
    """JSON, the tenant's JWT when one is given, and the gateway's Host when routing by host."""
    result = {"Content-Type": "application/json"}
    token = os.environ.get(TOKEN_ENV)
    if token:
        result["Authorization"] = f"Bearer {token}"
    if CONFIG.host_header:
        result["Host"] = CONFIG.host_header
    return result


# -- trace context -------------------------------------------------------------------------------
def traceparent() -> tuple[str, str]:
    """A W3C traceparent (version 00, sampled) with a fresh random trace id, and that id."""
    trace_id = secrets.token_hex(16)
    while trace_id == "0" * 32:  # all zeros is invalid (W3C Trace Context 3.2.2.3)
        trace_id = secrets.token_hex(16)
    parent_id = secrets.token_hex(8)
    while parent_id == "0" * 16:
        parent_id = secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id


@dataclass
class TraceLog:
    """The trace ids sent, not yet written (or shipped to the master), and how many in all."""

    pending: list[str] = field(default_factory=list)
    count: int = 0

    def record(self, trace_id: str) -> None:
        self.pending.append(trace_id)

    def take(self) -> list[str]:
        taken, self.pending = self.pending, []
        return taken

    def flush(self) -> None:
        """Append what is pending to traces.txt (the master or the single process only)."""
        if not self.pending or not CONFIG.output_dir:
            return
        taken = self.take()
        with (Path(CONFIG.output_dir) / TRACES_FILE).open("a") as out:
            out.write("".join(f"{trace_id}\n" for trace_id in taken))
        self.count += len(taken)


TRACES = TraceLog()


def traced(request_headers: dict[str, str]) -> dict[str, str]:
    """The headers of one request: with ``trace_run_id``, a fresh sampled traceparent and the
    run header added (and the trace id recorded); else as given."""
    if not CONFIG.trace_run_id:
        return request_headers
    header, trace_id = traceparent()
    TRACES.record(trace_id)
    return {**request_headers, "traceparent": header, RUN_HEADER: CONFIG.trace_run_id}


# -- payloads ------------------------------------------------------------------------------------
def iris_rows(rng: random.Random) -> list[list[float]]:
    """1..n iris-like rows, each drawn around one class's means (so every class is asked for)."""
    count = rng.randint(CONFIG.rows_min, CONFIG.rows_max)
    rows = []
    for _ in range(count):
        means, sds = IRIS_CLASSES[rng.randrange(len(IRIS_CLASSES))]
        rows.append([round(max(0.1, rng.gauss(mean, sd)), 1) for mean, sd in zip(means, sds, strict=True)])
    return rows


def v2_body(rows: list[list[float]]) -> dict[str, Any]:
    flat = [value for row in rows for value in row]
    return {"inputs": [{"name": "input-0", "shape": [len(rows), 4], "datatype": "FP32", "data": flat}]}


def chat_body(rng: random.Random) -> dict[str, Any]:
    """A chat request: sometimes a system prompt, sometimes a follow-up turn; varied lengths."""
    messages: list[dict[str, str]] = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    prompt = rng.choice(PROMPTS)
    messages.append({"role": "user", "content": prompt})
    if rng.random() < 0.3:
        messages.append({"role": "assistant", "content": "Here is a first answer."})
        messages.append({"role": "user", "content": rng.choice(FOLLOW_UPS)})
    return {"model": CONFIG.openai_model or CONFIG.model, "messages": messages, "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": rng.randint(CONFIG.tokens_min, CONFIG.tokens_max),
            "temperature": round(rng.uniform(0.2, 1.0), 2)}


def post_judged(client: Any, path: str, body: dict[str, Any], request_headers: dict[str, str],
                judge: Callable[[Any], str | None]) -> None:
    """POST ``body``; the request fails with ``judge``'s reason, if it gives one (a bare 200 is not enough)."""
    with client.post(path, data=json.dumps(body), headers=traced(request_headers), catch_response=True) as response:
        problem = judge(response)
        if problem:
            response.failure(problem)
        else:
            response.success()


# -- custom metrics ------------------------------------------------------------------------------
def metric(environment: Environment, name: str, value: float) -> None:
    """Record a custom metric sample: a METRIC "request" whose response time is the value."""
    environment.events.request.fire(request_type=METRIC, name=name, response_time=value, response_length=0,
                                    exception=None, context={})


# -- exact samples -------------------------------------------------------------------------------
@dataclass
class Samples:
    """Every response time (ms, as Locust measured it, unrounded) by series: "requests" (all real
    requests), "endpoint:<method> <name>", "metric:<name>". A worker ships what it gathered since
    its last report to the master, which gathers them all; which workers reported is kept too."""

    series: dict[str, list[float]] = field(default_factory=dict)
    workers: set[str] = field(default_factory=set)

    def add(self, key: str, value: float) -> None:
        self.series.setdefault(key, []).append(value)

    def take(self) -> dict[str, list[float]]:
        taken, self.series = self.series, {}
        return taken

    def merge(self, shipped: dict[str, list[float]]) -> None:
        for key, values in shipped.items():
            self.series.setdefault(key, []).extend(values)


SAMPLES = Samples()


def exact_percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest sample with at least ``fraction`` of all at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@events.request.add_listener
def _on_request(request_type: str, name: str, response_time: float | None, **_: Any) -> None:
    if response_time is None:
        return
    if request_type == METRIC:
        SAMPLES.add(f"metric:{name}", float(response_time))
    else:
        SAMPLES.add("requests", float(response_time))
        SAMPLES.add(f"endpoint:{request_type} {name}", float(response_time))


@events.report_to_master.add_listener
def _ship_samples(client_id: str, data: dict[str, Any], **_: Any) -> None:
    data["inferbox_samples"] = SAMPLES.take()
    if CONFIG.trace_run_id:
        data["inferbox_traces"] = TRACES.take()


@events.worker_report.add_listener
def _gather_samples(client_id: str, data: dict[str, Any], **_: Any) -> None:
    SAMPLES.workers.add(client_id)
    SAMPLES.merge(data.get("inferbox_samples") or {})
    TRACES.pending.extend(data.get("inferbox_traces") or [])


# -- bounds --------------------------------------------------------------------------------------
@dataclass
class RunControl:
    environment: Environment | None = None
    budget: int = 0
    stop_reason: str | None = None
    started: float | None = None
    monitor: Any = None

    def spend(self) -> None:
        """Take one request from this process's budget; with none left, the user stops."""
        if self.budget > 0:
            self.budget -= 1
            return
        if self.environment is not None and not isinstance(self.environment.runner, WorkerRunner):
            self.stop(f"maxRequests ({CONFIG.max_requests}) reached")
        raise StopUser()

    def stop(self, reason: str) -> None:
        if self.stop_reason is not None or self.environment is None or self.environment.runner is None:
            return
        self.stop_reason = reason
        gevent.spawn(self.environment.runner.quit)


CONTROL = RunControl()


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    CONTROL.environment = environment
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        # Each worker gets its share; together they never exceed max_requests by more than a share's rounding.
        CONTROL.budget = math.ceil(CONFIG.max_requests / max(1, CONFIG.workers))
    elif isinstance(runner, MasterRunner):
        CONTROL.budget = 0  # the master runs no users
    else:
        CONTROL.budget = CONFIG.max_requests


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    CONTROL.started = time.monotonic()
    if CONTROL.monitor is None:
        CONTROL.monitor = gevent.spawn(_monitor, environment)


def _monitor(environment: Environment) -> None:
    """Once a second: write progress, end the run at max_requests or past the duration backstop."""
    while True:
        gevent.sleep(1.0)  # a progress tick, not a wait for a condition
        TRACES.flush()
        totals = real_requests(environment)
        _write_progress(environment, totals)
        if totals.num_requests >= CONFIG.max_requests:
            CONTROL.stop(f"maxRequests ({CONFIG.max_requests}) reached")
        elapsed = time.monotonic() - (CONTROL.started or time.monotonic())
        if elapsed > CONFIG.max_duration_s + BACKSTOP_GRACE_S:
            CONTROL.stop(f"duration backstop ({CONFIG.max_duration_s:.0f}s + {BACKSTOP_GRACE_S:.0f}s) reached")


@events.quit.add_listener
def _on_quit(exit_code: int, **_: Any) -> None:
    environment = CONTROL.environment
    if environment is None or isinstance(environment.runner, WorkerRunner) or not CONFIG.output_dir:
        return
    TRACES.flush()
    _write_json(RESULT_FILE, result(environment, exit_code))


# -- exports -------------------------------------------------------------------------------------
def real_requests(environment: Environment) -> StatsEntry:
    """All non-METRIC entries merged into one (what the SLOs are about)."""
    stats = environment.runner.stats if environment.runner is not None else environment.stats
    merged = StatsEntry(stats, "requests", "", use_response_times_cache=False)
    for entry in stats.entries.values():
        if entry.method != METRIC:
            merged.extend(entry)
    return merged


def entry_summary(entry: StatsEntry, duration_s: float, samples: list[float] | None = None) -> dict[str, Any]:
    """Totals and percentiles of one series; exact percentiles from ``samples`` when given."""
    completed = entry.num_requests - entry.num_none_requests
    locust = {f"p{round(p * 100, 1):g}": entry.get_response_time_percentile(p) if completed else None
              for p in PERCENTILES}
    exact = {f"p{round(p * 100, 1):g}": exact_percentile(samples, p) for p in PERCENTILES} if samples else None
    return {
        "count": entry.num_requests,
        "failures": entry.num_failures,
        "rps": entry.num_requests / duration_s if duration_s > 0 else 0.0,
        "avg": entry.total_response_time / completed if completed else None,
        "min": entry.min_response_time,
        "max": entry.max_response_time if completed else None,
        "sum": entry.total_response_time,
        "percentiles": exact or locust,
        "percentiles_exact": exact is not None,
        "percentiles_locust": locust,
        "avg_content_length": entry.avg_content_length,
    }


def result(environment: Environment, exit_code: int) -> dict[str, Any]:
    stats = environment.runner.stats
    now = time.time()
    last = stats.last_request_timestamp or now
    duration = max(1e-9, last - stats.start_time)
    runner = environment.runner
    series = SAMPLES.series
    return {
        "schema": 1,
        "started": stats.start_time,
        "last_request": stats.last_request_timestamp,
        "finished": now,
        "duration_s": duration,
        "exit_code": exit_code,
        "stop_reason": CONTROL.stop_reason or "run time reached (or the step shape ended)",
        # Workers have disconnected by now: count those that reported during the run.
        "workers": len(SAMPLES.workers) if isinstance(runner, MasterRunner) else 0,
        "requests": entry_summary(real_requests(environment), duration, series.get("requests")),
        "endpoints": {f"{e.method} {e.name}": entry_summary(e, duration, series.get(f"endpoint:{e.method} {e.name}"))
                      for e in stats.entries.values() if e.method != METRIC},
        "metrics": {e.name: entry_summary(e, duration, series.get(f"metric:{e.name}"))
                    for e in stats.entries.values() if e.method == METRIC},
        "errors": [{"method": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
                   for e in list(stats.errors.values())[:50]],
        **({"tracing": {"run_id": CONFIG.trace_run_id, "header": RUN_HEADER, "requests": TRACES.count,
                        "file": TRACES_FILE}} if CONFIG.trace_run_id else {}),
    }


def _write_progress(environment: Environment, totals: StatsEntry) -> None:
    if not CONFIG.output_dir:
        return
    runner = environment.runner
    stats = runner.stats
    real = [e for e in stats.entries.values() if e.method != METRIC]
    # The rolling-window percentiles of the aggregate, or (with custom metrics mixed in) of the
    # busiest real endpoint: good enough for a progress line; the summary uses every sample.
    source = stats.total if len(real) == len(stats.entries) else max(real, key=lambda e: e.num_requests, default=None)
    current: dict[str, float | None] = {"p50": None, "p95": None}
    if source is not None and source.num_requests:
        for key, percent in (("p50", 0.5), ("p95", 0.95)):
            try:
                current[key] = source.get_current_response_time_percentile(percent)
            except ValueError:  # an entry without the rolling cache
                current[key] = None
    _write_json(PROGRESS_FILE, {
        "elapsed_s": time.monotonic() - (CONTROL.started or time.monotonic()),
        "users": runner.user_count,
        "requests": totals.num_requests,
        "failures": totals.num_failures,
        "rps": sum(e.current_rps for e in real),
        "p50_ms": current["p50"], "p95_ms": current["p95"],
        "state": str(runner.state),
    })


def _write_json(name: str, data: dict[str, Any]) -> None:
    assert CONFIG.output_dir
    path = Path(CONFIG.output_dir) / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def user_rng() -> random.Random:
    """Each user its own generator, so users send different payloads."""
    return random.Random(random.getrandbits(64))
