"""Local predictor benchmark: cold start and throughput/latency of the local predictors (sklearn-iris, iris-mlp).

* cold start: from `deploy` (process spawn; the environment and model artifact already exist) to
  the first successful V1 prediction, median of N runs (each stopped before the next);
* load: a fixed number of V1 predict requests from a fixed number of concurrent clients, each a
  thread with its own keep-alive http.client connection to 127.0.0.1; throughput and latency
  percentiles.

    .venv/bin/python bench/local_predictor_bench.py [--models sklearn-iris iris-mlp] [--requests 2000]

It ends with the table the README shows, under a line saying when and on what it was measured.

Loopback only, bounded in count; it stops the predictor it started.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import measured  # bench/machine.py: the script's folder is on sys.path

from inferbox import PROJECT_ROOT
from inferbox.config import load_versions
from inferbox.local import client
from inferbox.local.predictors import LocalPaths, LocalTarget
from inferbox.models.catalog import default_catalog_path, load_catalog
from inferbox.runner import ShellRunner

IRIS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]


def make_target(directory: Path) -> LocalTarget:
    paths = LocalPaths(directory=directory, venv=PROJECT_ROOT / ".inferbox" / "local" / "venv",
                       requirements=PROJECT_ROOT / "models" / "local-predictor", root=PROJECT_ROOT)
    kserve = load_versions(PROJECT_ROOT / "versions.toml").charts.kserve.version
    return LocalTarget(paths, load_catalog(default_catalog_path(PROJECT_ROOT)), ShellRunner(), kserve_version=kserve)


def cold_start(target: LocalTarget, model: str) -> float:
    started = time.perf_counter()
    target.deploy(model)
    target.predict(model, IRIS)
    elapsed = time.perf_counter() - started
    target.down(model)
    return elapsed


def worker(port: int, model: str, count: int) -> list[float]:
    body = json.dumps({"instances": IRIS}).encode()
    conn = http.client.HTTPConnection(client.LOOPBACK, port, timeout=30)
    latencies = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            conn.request("POST", client.v1_path(model), body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            if response.status != 200 or json.loads(payload)["predictions"] != [1, 1]:
                raise RuntimeError(f"bad answer {response.status}: {payload[:200]!r}")
            latencies.append(time.perf_counter() - started)
    finally:
        conn.close()
    return latencies


def load(port: int, model: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    shares = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda n: worker(port, model, n), shares))
    return time.perf_counter() - started, [lat for part in results for lat in part]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(target: LocalTarget, model: str, args: argparse.Namespace) -> dict[str, float]:
    target.deploy(model)  # installs the environment and builds the artifact once, untimed
    target.down(model)
    starts = [cold_start(target, model) for _ in range(args.runs)]
    outcome = target.deploy(model)
    try:
        load(outcome.record.http_port, model, min(200, args.requests), args.concurrency)  # warm-up
        wall, latencies = load(outcome.record.http_port, model, args.requests, args.concurrency)
    finally:
        target.down(model)
    print(f"{model}: cold starts {', '.join(f'{s:.2f}s' for s in starts)}; {len(latencies)} requests in "
          f"{wall:.2f}s; p90 {percentile(latencies, 0.9) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    return {"cold_start_s": statistics.median(starts), "rps": len(latencies) / wall,
            "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000,
            "device": outcome.device or "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sklearn-iris", "iris-mlp"])
    parser.add_argument("--runs", type=int, default=3, help="cold starts to take the median of")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inferbox-bench-") as tmp:
        target = make_target(Path(tmp))
        figures = {model: measure(target, model, args) for model in args.models}
    # The README's table, as printed here.
    print()
    print(f"{measured()}; {args.requests} V1 requests from {args.concurrency} concurrent keep-alive clients, "
          "environment already built:")
    print()
    print(f"| model | cold start (deploy to first prediction, median of {args.runs}) | throughput | p50 | p99 |")
    print("|---|---|---|---|---|")
    for model, f in figures.items():
        label = model if model == "sklearn-iris" else f"{model} ({str(f['device']).upper()})"
        print(f"| {label} | {f['cold_start_s']:.2f} s | {f['rps']:.0f} req/s | {f['p50_ms']:.1f} ms | "
              f"{f['p99_ms']:.1f} ms |")


if __name__ == "__main__":
    main()
