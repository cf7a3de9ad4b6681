"""A wait on a busy build lock says what it waits for and whose lock it is, and keeps saying so."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from inferbox.locks import file_lock, heartbeat

HOLD = """
import sys, time
from pathlib import Path
from inferbox.locks import file_lock
with file_lock(Path(sys.argv[1]), what="a test build", log=lambda m: None):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))  # the other process' build, for this long
"""


def test_a_waiter_names_the_holder_and_keeps_reporting(tmp_path: Path) -> None:
    lock = tmp_path / ".build.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), "1.5"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    said: list[str] = []
    started = time.monotonic()
    with file_lock(lock, what="the same build", log=said.append, every_s=0.3):
        waited = time.monotonic() - started
        assert lock.read_text().startswith(f"pid {os.getpid()} since ")  # now ours
    holder.wait(timeout=30)
    assert waited > 0.5
    assert re.fullmatch(rf"waiting for .build.lock \(the same build\): held by pid {holder.pid} since "
                        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(a test build\)", said[0]), said[0]
    assert len(said) >= 2 and all(s.startswith("still waiting for .build.lock after ") for s in said[1:])
    assert lock.read_text() == ""  # released: no stale holder named


def test_heartbeat_reports_while_a_step_runs() -> None:
    said: list[str] = []
    with heartbeat(said.append, lambda s: f"still building ({s:.1f} s)", every_s=0.1):
        time.sleep(0.35)  # the step being reported on
    assert 2 <= len(said) <= 4 and said[0].startswith("still building (")
