"""Long-running child processes (the control-plane daemons).

Each daemon runs in its own session/process group, with stdout and stderr in
a log file, so that stopping it also stops anything it forked and a failure
can be explained with the end of its log. On Linux the children get SIGKILL
if the Python process dies (even by SIGKILL), so no daemon outlives a
killed test run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LOG_TAIL_LINES", "Daemon", "DaemonError"]

LOG_TAIL_LINES = 40


class DaemonError(RuntimeError):
    """A daemon did not start; says which, why, and shows its log tail."""

    def __init__(self, component: str, reason: str, log_tail: str = "") -> None:
        self.component = component
        self.reason = reason
        self.log_tail = log_tail
        msg = f"{component}: {reason}"
        if log_tail:
            msg += f"\n--- last lines of the {component} log ---\n{log_tail}"
        super().__init__(msg)


@dataclass
class Daemon:
    """A long-running child process: its command line, its log file, its process group."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        binary = Path(self.argv[0])
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise DaemonError(self.name, f"binary missing or not executable: {binary}")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child from here on
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=_die_with_parent)  # noqa: PLW1509 - only a prctl call
        finally:
            log.close()

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, reason: str) -> DaemonError:
        tail = self.log_tail()
        if "address already in use" in tail:
            reason += " (a port it needs is already in use)"
        return DaemonError(self.name, reason, tail)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # The leader is gone; sweep anything left in its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


# Resolved in the parent, so the child (between fork and exec) only makes the call.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: ask for SIGKILL when the parent dies, so no daemon outlives a killed test run.

    SIGKILL, not SIGTERM: a kube-apiserver whose etcd died at the same moment
    hangs in its graceful shutdown, and nobody is left to escalate.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def wait_for_stop_signal() -> None:
    """Block until Ctrl-C or SIGTERM (a foreground service's main loop)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
