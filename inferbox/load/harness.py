"""One Locust run: its configuration file, its command line, and running it with a progress display.

Locust runs as its own process (``python -m locust ... --headless``) through the project's
runner: gevent's monkey-patching stays out of the invoke process, and ``--workers N`` is Locust's
own master/worker mode (``--processes N``: N forked workers and a master, bound to loopback).
The locustfiles live in ``load/`` and read what this module writes (loadkit.py describes it).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from inferbox.errors import InferboxError
from inferbox.load.profiles import Profile, format_duration
from inferbox.load.target import KSERVE_OPENAI_PREFIX
from inferbox.runner import Command, Result, Runner

LOCUSTFILES = {"v1": "v1_predict.py", "v2": "v2_infer.py", "openai": "openai_chat.py"}
SHAPE_FILE = "step_shape.py"
SHARED_FILE = "loadkit.py"
CONFIG_FILE = "config.json"
RESULT_FILE = "locust-result.json"
PROGRESS_FILE = "progress.json"
CSV_PREFIX = "locust"
HTML_FILE = "locust.html"
LOG_FILE = "locust.log"
OUTPUT_FILE = "locust-output.txt"
CONFIG_ENV = "INFERBOX_LOAD_CONFIG"
TOKEN_ENV = "INFERBOX_LOAD_TOKEN"
MAX_WORKERS = 64
# Beyond the profile's duration: start-up (workers connecting), the stop timeout, the final reports.
OVERHEAD_S = 120.0
_REFRESH_S = 0.5


class LoadTestError(InferboxError):
    """Locust itself failed (not an SLO): the message ends with its log."""


@dataclass(frozen=True)
class RunSpec:
    """Everything one Locust run needs; the token travels separately (an environment variable)."""

    profile: Profile
    model: str
    base_url: str
    host_header: str | None
    workers: int
    run_dir: Path
    load_dir: Path
    openai_model: str | None = None
    openai_prefix: str = KSERVE_OPENAI_PREFIX  # "" for a local vLLM server
    trace_run_id: str | None = None  # --trace: every request carries a sampled traceparent and this run id

    @property
    def stop_timeout_s(self) -> int:
        # A streamed completion may need seconds to finish; a predict call needs milliseconds.
        return 30 if "openai" in self.profile.protocols else 5

    @property
    def timeout_s(self) -> float:
        return self.profile.duration + self.stop_timeout_s + OVERHEAD_S


def locust_config(spec: RunSpec, output_dir: str) -> dict[str, Any]:
    """What loadkit.py reads (INFERBOX_LOAD_CONFIG)."""
    profile = spec.profile
    return {
        "model": spec.model,
        "protocols": dict(profile.protocols),
        "wait_min_s": profile.wait_time.min,
        "wait_max_s": profile.wait_time.max,
        "rows_min": profile.rows_per_request.min,
        "rows_max": profile.rows_per_request.max,
        "tokens_min": profile.token_range.min,
        "tokens_max": profile.token_range.max,
        "max_requests": profile.max_requests,
        "max_duration_s": profile.duration,
        "workers": spec.workers,
        "host_header": spec.host_header,
        "steps": [[s.users, s.spawn_rate, s.duration] for s in profile.steps or []],
        "output_dir": output_dir,
        "openai_model": spec.openai_model,
        "openai_prefix": spec.openai_prefix,
        "trace_run_id": spec.trace_run_id,
    }


def locustfiles(profile: Profile) -> list[str]:
    """The files ``-f`` loads: one per protocol in the mix, and the step shape for a step load."""
    files = [LOCUSTFILES[p] for p in LOCUSTFILES if p in profile.protocols]
    if profile.steps:
        files.append(SHAPE_FILE)
    return files


def load_options(profile: Profile, *, stop_timeout_s: int) -> list[str]:
    """Users, rate and run time (not with a step shape: the shape sets them) and the stop timeout."""
    options = []
    if not profile.steps:
        assert profile.users is not None and profile.spawn_rate is not None
        options += ["--users", str(profile.users), "--spawn-rate", f"{profile.spawn_rate:g}",
                    "--run-time", f"{profile.duration}s"]
    return [*options, "--stop-timeout", str(stop_timeout_s)]


def locust_argv(spec: RunSpec, *, python: str = sys.executable, master_port: int | None = None) -> tuple[str, ...]:
    files = ",".join(str(spec.load_dir / name) for name in locustfiles(spec.profile))
    out = spec.run_dir
    argv = [python, "-m", "locust", "-f", files, "--headless", "--host", spec.base_url,
            *load_options(spec.profile, stop_timeout_s=spec.stop_timeout_s),
            "--csv", str(out / CSV_PREFIX), "--csv-full-history", "--html", str(out / HTML_FILE),
            # Progress comes from progress.json (loadkit); Locust's log goes to a file.
            "--only-summary", "--logfile", str(out / LOG_FILE), "--loglevel", "INFO",
            # Failed requests are judged by the SLOs; a non-zero exit means Locust itself failed.
            "--exit-code-on-error", "0"]
    if spec.workers:
        if master_port is None:
            raise ValueError("a distributed run needs the master's port")
        # Locust's own master/worker mode: N forked workers, the master bound to loopback only.
        argv += ["--processes", str(spec.workers), "--expect-workers", str(spec.workers),
                 "--expect-workers-max-wait", "60", "--master-bind-host", "127.0.0.1",
                 "--master-bind-port", str(master_port), "--master-port", str(master_port)]
    return tuple(argv)


def write_config(spec: RunSpec) -> Path:
    path = spec.run_dir / CONFIG_FILE
    path.write_text(json.dumps(locust_config(spec, str(spec.run_dir)), indent=2) + "\n")
    return path


def run_locust(spec: RunSpec, runner: Runner, console: Console, *, token: str | None,
               master_port: int | None = None) -> Result:
    """Run Locust to its end, showing progress; raise LoadTestError when it did not produce a result."""
    config = write_config(spec)
    env = {CONFIG_ENV: str(config), "PYTHONUNBUFFERED": "1"}
    if token:
        env[TOKEN_ENV] = token
    command = Command(locust_argv(spec, master_port=master_port), timeout=spec.timeout_s, env=env,
                      secrets=(token,) if token else (), retry_transient=False)
    progress = Progress(spec, console)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="locust") as pool:
        future = pool.submit(runner.run, command, check=False)
        try:
            result = _follow(future, progress)
        except KeyboardInterrupt:
            # Ctrl-C reached Locust too (same process group): it stops and writes its reports.
            console.print("interrupted: waiting for Locust to stop and write its reports ...", markup=False)
            future.result(timeout=spec.stop_timeout_s + 60)
            raise
    _save_output(spec.run_dir, result)
    if result.exit_code != 0 or not (spec.run_dir / RESULT_FILE).is_file():
        raise LoadTestError(f"locust failed (exit code {result.exit_code}, no {RESULT_FILE}):\n"
                            f"{_tail(spec.run_dir / LOG_FILE, result)}")
    return result


def _follow(future: Future[Result], progress: Progress) -> Result:
    try:
        while True:
            try:
                return future.result(timeout=_REFRESH_S)  # returns as soon as Locust exits
            except FutureTimeout:
                progress.update()
    finally:
        progress.close()


def _save_output(run_dir: Path, result: Result) -> None:
    text = f"$ {result.command.display()}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    (run_dir / OUTPUT_FILE).write_text(text)


def _tail(log: Path, result: Result, lines: int = 25) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        text = ""
    text = text + "\n" + result.stderr
    return "\n".join(text.strip().splitlines()[-lines:])


class Progress:
    """A live status line on a terminal; a plain line every few seconds elsewhere (CI logs)."""

    def __init__(self, spec: RunSpec, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.console = console
        self.clock = clock
        self.started = clock()
        self.every_s = 5.0 if spec.profile.duration <= 120 else 30.0
        self.last_line = self.started
        # Text: a status given a str reads it as markup; profile and model names are shown as written.
        self.status = console.status(Text(self.text({}))) if console.is_terminal else None
        if self.status is not None:
            self.status.start()

    def read(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.spec.run_dir / PROGRESS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data

    def text(self, data: dict[str, Any]) -> str:
        profile = self.spec.profile
        head = f"{profile.name} -> {self.spec.model}"
        if not data:
            return f"{head}: starting Locust{f' ({self.spec.workers} workers)' if self.spec.workers else ''} ..."
        def ms(value: Any) -> str:
            return "-" if value is None else f"{value:g} ms"
        return (f"{head}: {format_duration(int(data.get('elapsed_s', 0)))} of {format_duration(profile.duration)}"
                f" | {data.get('users', 0)} users | {data.get('requests', 0)} requests"
                f" ({data.get('failures', 0)} failed) | {data.get('rps', 0):.0f} req/s"
                f" | p50 {ms(data.get('p50_ms'))} p95 {ms(data.get('p95_ms'))}")

    def update(self) -> None:
        data = self.read()
        if self.status is not None:
            self.status.update(Text(self.text(data)))
        elif self.clock() - self.last_line >= self.every_s:
            self.last_line = self.clock()
            self.console.print(self.text(data), markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
