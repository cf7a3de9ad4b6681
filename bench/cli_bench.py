"""Wall time of the everyday commands a user (or CI) runs first (target: each under 1 s).

    .venv/bin/python bench/cli_bench.py [--runs 7]

Each command runs as a fresh process, as a user would start it; prints median and max.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "invoke --list": ["--list"],
    "invoke plan": ["plan"],
    "invoke plan --json": ["plan", "--json"],
    "invoke bootstrap --dry-run": ["bootstrap", "--dry-run"],
}
TARGET_S = 1.0


def time_command(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    print(f"{'command':32} {'median':>8} {'max':>8}  target < {TARGET_S:.1f}s  ({runs} runs each)")
    for name, args in COMMANDS.items():
        time_command(args)  # warm the OS file cache and .pyc files
        samples = [time_command(args) for _ in range(runs)]
        median = statistics.median(samples)
        verdict = "ok" if median < TARGET_S else "OVER"
        print(f"{name:32} {median:7.3f}s {max(samples):7.3f}s  {verdict}")


if __name__ == "__main__":
    main()
