"""Load-harness fidelity: how much of what the server can do does Locust (our locustfiles) reach?

On one local sklearn-iris predictor (KServe's model server on 127.0.0.1), in one run, R rounds of:

1. ``wrk`` with N keep-alive connections, posting the V1 JSON body from a Lua script, for D seconds;
2. ``invoke loadtest``'s harness (run_loadtest, the real locustfiles) with N users and no think
   time, one Locust process, D seconds;
3. the same with ``--workers 2`` (Locust's master + 2 worker processes).

Fidelity = Locust's requests/s / the same round's wrk requests/s; the medians over the rounds are
reported (adjacent measurements, so a machine that gets busier or quieter during the run affects
both sides of each ratio alike). Both send 2 iris rows per request over N connections with no
pause; wrk is the reference because its per-request cost is tiny. Target: >= 0.9 with one process.

With ``--pin`` (the default where there are two CPUs or more) the predictor runs on CPU 0 and the
load generators (wrk, Locust and its workers) on CPU 1, so neither tool takes CPU time from the
server it measures; ``--no-pin`` lets them share every CPU.

    .venv/bin/python bench/load_fidelity_bench.py [--connections 8] [--duration 10] [--rounds 3] [--json out.json]

Needs ``wrk`` on PATH (apt-get install wrk). Loopback only, bounded in time; it stops the predictor
it started.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from machine import measured  # bench/machine.py: the script's folder is on sys.path
from rich.console import Console

from inferbox import PROJECT_ROOT
from inferbox.config import Settings, build_settings
from inferbox.load.app import run_loadtest
from inferbox.local import client
from inferbox.local.predictors import LocalPaths, LocalTarget
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.runner import Command, ShellRunner

MODEL = "sklearn-iris"
BODY = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
LUA = f"""wrk.method = "POST"
wrk.body = '{json.dumps(BODY)}'
wrk.headers["Content-Type"] = "application/json"
"""


def make_target(settings: Settings, directory: Path) -> LocalTarget:
    paths = LocalPaths(directory=directory, venv=PROJECT_ROOT / ".inferbox" / "local" / "venv",
                       requirements=PROJECT_ROOT / "models" / "local-predictor", root=PROJECT_ROOT)
    return LocalTarget(paths, load_catalog(default_catalog_path(PROJECT_ROOT)), ShellRunner(),
                       kserve_version=settings.versions.charts.kserve.version, startup_timeout_s=180)


def wrk(runner: ShellRunner, port: int, script: Path, connections: int, duration: int) -> dict[str, Any]:
    url = f"http://{client.LOOPBACK}:{port}{client.v1_path(MODEL)}"
    result = runner.run(Command(("wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency",
                                 "-s", str(script), url), timeout=duration + 60, retry_transient=False))
    text = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    p50 = re.search(r"50%\s+([\d.]+\w+)", text)
    if bad:
        raise RuntimeError(f"wrk saw {bad.group(1)} failed responses:\n{text}")
    return {"rps": rps, "requests": total, "p50": p50.group(1) if p50 else None}


def locust(settings: Settings, profiles: Path, target: LocalTarget, workers: int) -> dict[str, Any]:
    outcome = run_loadtest(settings, MODEL, None, "fidelity", workers=workers, profiles_path=profiles, local=target,
                           console=Console(file=io.StringIO()))
    assert outcome is not None
    requests = outcome.summary["requests"]
    if requests["failures"]:
        raise RuntimeError(f"locust saw {requests['failures']} failures: {outcome.summary['errors']}")
    return {"rps": requests["rps"], "requests": requests["count"], "p50_ms": requests["percentiles"]["p50"],
            "run": outcome.run_dir.name}


def bench_profile(path: Path, connections: int, duration: int) -> Path:
    data = {"schema": 1, "profiles": {"fidelity": {
        "description": "closed loop, no think time: as many requests as the server answers",
        "users": connections, "spawnRate": connections, "duration": f"{duration}s", "maxRequests": 10_000_000,
        "waitTime": {"min": 0, "max": 0}, "models": [MODEL], "protocols": {"v1": 1},
        "rowsPerRequest": {"min": 2, "max": 2}, "slo": {"maxErrorRate": 0}}}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (affinity is per thread on Linux)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=8, help="wrk connections = Locust users")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of wrk, Locust, Locust --workers 2")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
                        help="predictor on CPU 0, load generators on CPU 1")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not on PATH: apt-get install wrk")
    runner = ShellRunner()
    rounds: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="inferbox-fidelity-") as tmp:
        work = Path(tmp)
        script = work / "post.lua"
        script.write_text(LUA)
        profiles = bench_profile(work / "profiles.yaml", args.connections, args.duration)
        settings = build_settings(PROJECT_ROOT, state_dir=work / "state")
        target = make_target(settings, work / "local")
        record = target.deploy(MODEL).record
        try:
            if args.pin:
                pin(record.pid, {0})
                os.sched_setaffinity(0, {1})  # wrk, Locust and its workers inherit it
            wrk(runner, record.http_port, script, args.connections, 3)  # warm-up, untimed
            for _ in range(args.rounds):
                one = {"wrk": wrk(runner, record.http_port, script, args.connections, args.duration),
                       "locust_1_process": locust(settings, profiles, target, workers=0),
                       "locust_2_workers": locust(settings, profiles, target, workers=2)}
                for key in ("locust_1_process", "locust_2_workers"):
                    one[key]["fidelity"] = one[key]["rps"] / one["wrk"]["rps"]
                rounds.append(one)
        finally:
            target.down(MODEL)
    figures: dict[str, Any] = {
        "connections": args.connections, "duration_s": args.duration, "pinned": args.pin, "cpus": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "rounds": rounds,
        "median": {key: {"rps": statistics.median(r[key]["rps"] for r in rounds),
                         **({"fidelity": statistics.median(r[key]["fidelity"] for r in rounds)}
                            if key != "wrk" else {})}
                   for key in ("wrk", "locust_1_process", "locust_2_workers")},
    }
    where = "predictor on CPU 0, load generators on CPU 1" if args.pin else "all sharing every CPU"
    print(f"{args.connections} connections/users, {args.duration}s per measurement, {args.rounds} rounds, V1 predict "
          f"with 2 iris rows, sklearn-iris on 127.0.0.1 ({where}); load average "
          f"{load_before[0]:.1f} before, {figures['load_average_after'][0]:.1f} after")
    for index, one in enumerate(rounds, 1):
        print(f"  round {index}: wrk {one['wrk']['rps']:6.0f} req/s | Locust {one['locust_1_process']['rps']:6.0f} "
              f"({one['locust_1_process']['fidelity']:.2f}) | Locust --workers 2 {one['locust_2_workers']['rps']:6.0f} "
              f"({one['locust_2_workers']['fidelity']:.2f})")
    median = figures["median"]
    print(f"  median: wrk {median['wrk']['rps']:.0f} req/s; Locust 1 process {median['locust_1_process']['rps']:.0f} "
          f"req/s -> fidelity {median['locust_1_process']['fidelity']:.2f}; Locust --workers 2 "
          f"{median['locust_2_workers']['rps']:.0f} req/s -> fidelity {median['locust_2_workers']['fidelity']:.2f}")
    # The README's sentence, as printed here.
    print()
    print(f"{measured()}: Locust's requests/s over wrk's with the same {args.connections} connections on one local "
          f"predictor ({where}), median of {args.rounds} rounds: one Locust process "
          f"{median['locust_1_process']['fidelity']:.2f}, `--workers 2` {median['locust_2_workers']['fidelity']:.2f} "
          f"(wrk {median['wrk']['rps']:.0f} req/s).")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
