"""An exclusive lock file around a build into a shared cache, and a heartbeat for long steps.

Two processes building the same thing at once (two test runs, a test and a task): the second
waits, then finds the first one's result instead of building again. While it waits it says what
for, whose lock it is (pid, since when) and keeps saying so, never silent for long.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

Log = Callable[[str], None]
REPORT_EVERY_S = 15.0


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def heartbeat(log: Log, message: Callable[[float], str], every_s: float = REPORT_EVERY_S) -> Iterator[None]:
    """Log ``message(elapsed seconds)`` every ``every_s`` while the block runs."""
    done = threading.Event()
    started = time.monotonic()

    def report() -> None:
        while not done.wait(every_s):
            log(message(time.monotonic() - started))

    thread = threading.Thread(target=report, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextmanager
def file_lock(path: Path, *, what: str = "", log: Log = stderr_log, every_s: float = REPORT_EVERY_S) -> Iterator[None]:
    """Hold ``path`` exclusively. A second holder waits, saying for what and for whom: the lock
    file names its holder (pid, since when, what), read when the lock is busy."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown holder"
            log(f"waiting for {path.name} ({what or 'a build'}): held by {holder}")
            with heartbeat(log, lambda s: f"still waiting for {path.name} after {s:.0f} s: held by {holder}",
                           every_s):
                fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        handle.write(f"pid {os.getpid()} since {since}" + (f" ({what})" if what else "") + "\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
