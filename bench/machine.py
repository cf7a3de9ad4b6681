"""The line every bench prints above the table the README shows: when, where, and how."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> str:
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
    except (OSError, IndexError, ValueError):
        return "? GiB"
    return f"{kib / 1024 / 1024:.0f} GiB"


def measured() -> str:
    """``Measured 2026-11-29 with `bench/x.py --flag` on 2 CPUs (model), 24 GiB, Linux, Python 3.11``."""
    command = shlex.join(["bench/" + Path(sys.argv[0]).name, *sys.argv[1:]])
    return (f"Measured {datetime.now(UTC):%Y-%m-%d} with `{command}` on {os.cpu_count()} CPUs ({_cpu_model()}), "
            f"{_memory_gib()}, {platform.system()}, Python {platform.python_version()}")
