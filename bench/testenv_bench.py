"""Benchmark of the hermetic test control plane (inferbox.testenv).

Prints the cold build time recorded in the build's stamp file, then starts
and stops the control plane ``--runs`` times and prints the median warm
start time (all components healthy and the fake nodes Ready) and stop time.

    python bench/testenv_bench.py [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import measured  # noqa: E402 - bench/machine.py

from inferbox.testenv import ControlPlane, find_binaries, load_pins  # noqa: E402 - after the path set-up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()

    binaries = find_binaries(load_pins(ROOT / "versions.toml"))
    if binaries is None:
        print("testenv binaries not built: run `.venv/bin/invoke testenv --build-only` first", file=sys.stderr)
        return 2

    starts, stops = [], []
    for _ in range(args.runs):
        cp = ControlPlane(binaries)
        cp.start()
        starts.append(cp.started_in or 0.0)
        t0 = time.monotonic()
        cp.stop()
        stops.append(time.monotonic() - t0)

    stamp = binaries.stamp
    result = {
        "cold_build_s": round(stamp["build_seconds"], 1),
        "cold_build_steps_s": {k: round(v, 1) for k, v in stamp["step_seconds"].items()},
        "warm_start_median_s": round(statistics.median(starts), 2),
        "warm_start_runs_s": [round(s, 2) for s in starts],
        "stop_median_s": round(statistics.median(stops), 2),
        "stop_runs_s": [round(s, 2) for s in stops],
        "go": stamp.get("go_version"),
        "jobs": stamp.get("jobs"),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"cold build (from stamp, {result['jobs']} jobs): {result['cold_build_s']} s "
          f"{result['cold_build_steps_s']}")
    print(f"warm start, median of {args.runs}: {result['warm_start_median_s']} s  {result['warm_start_runs_s']}")
    print(f"stop, median of {args.runs}: {result['stop_median_s']} s  {result['stop_runs_s']}")
    steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in sorted(
        result["cold_build_steps_s"].items(), key=lambda kv: -kv[1]))
    size_mb = sum(f.stat().st_size for f in binaries.bin_dir.iterdir() if f.is_file()) / 1e6
    # The README's paragraph, as printed here.
    print()
    print(f"{measured()}: cold build {result['cold_build_s']:.0f} s ({steps}; from the build's stamp), warm start "
          f"{result['warm_start_median_s']} s (median of {args.runs}), stop {result['stop_median_s']} s. Cache: "
          f"{size_mb:.0f} MB of binaries, plus the Go build and module caches.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
