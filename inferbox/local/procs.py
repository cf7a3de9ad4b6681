"""Detached model-server processes: start, identify, stop.

Started with ``os.posix_spawn`` in a session of their own (not ``subprocess``, whose import the
repo reserves for the runner and the test control plane): a predictor must outlive the ``invoke``
command that started it, and stopping its process group also stops anything it forked.

A pid alone does not identify a process once it has exited (the kernel reuses pids), so a
predictor is recorded with its start time as the kernel tells it (Linux ``/proc``); a live pid
with another start time is somebody else's process and is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

_PROC = Path("/proc")


def spawn_detached(argv: Sequence[str], log_path: Path, env: Mapping[str, str]) -> int:
    """Start ``argv`` in a new session, stdin from /dev/null, stdout+stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, null_fd, 0), (os.POSIX_SPAWN_DUP2, log_fd, 1),
                   (os.POSIX_SPAWN_DUP2, log_fd, 2)]
        return os.posix_spawn(argv[0], list(argv), dict(env), file_actions=actions, setsid=True)
    finally:
        os.close(log_fd)
        os.close(null_fd)


def _stat_fields(path: Path) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on; None when the process is gone."""
    try:
        stat = path.read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after its closing parenthesis.
    return stat[stat.rindex(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown or gone."""
    fields = _stat_fields(_PROC / str(pid) / "stat")
    if fields is None or fields[0] == "Z":  # a zombie has exited; only its exit status is left to collect
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (tests, benches); harmless otherwise."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_running(pid: int, started: int | None) -> bool:
    """Is ``pid`` still the process we started (same start time), and not a zombie?"""
    _reap(pid)
    if _PROC.is_dir():
        ticks = start_ticks(pid)
        return ticks is not None and (started is None or ticks == started)
    try:  # no /proc (macOS): existence is all we can check
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_exit(pid: int, started: int | None, timeout_s: float) -> bool:
    """Block until the process exits or ``timeout_s`` passes; True when it is gone."""
    deadline = time.monotonic() + timeout_s
    pidfd = _pidfd(pid)
    try:
        while is_running(pid, started):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if pidfd is not None:
                # The pidfd turns readable when the process exits: no polling interval to choose.
                select.select([pidfd], [], [], remaining)
            else:
                time.sleep(min(0.05, remaining))  # no pidfd (macOS): a short poll is all there is
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def group_members(pgid: int, started: int | None) -> list[int]:
    """Live processes of the session ``pgid`` leads, started no earlier than it (Linux /proc).

    A model server's children (vLLM's engine and worker) outlive their leader when it is killed;
    they keep its session and process group ids, which the start time tells apart from a reuse."""
    members = []
    for entry in _PROC.glob("[0-9]*/stat"):
        fields = _stat_fields(entry)
        if fields is None:
            continue
        state, pgrp, session, ticks = fields[0], int(fields[2]), int(fields[3]), int(fields[19])
        if state != "Z" and pgrp == pgid and session == pgid and (started is None or ticks >= started):
            members.append(int(entry.parent.name))
    return members


def stop(pid: int, started: int | None, grace_s: float = 10.0) -> bool:
    """SIGTERM the process group (KServe and vLLM shut down gracefully), SIGKILL it after ``grace_s``;
    also when the leader is gone but processes it started still run in its group.

    Returns False when nothing of it was left (nothing was signalled).
    """
    leader = is_running(pid, started)
    if not leader and not _leftovers(pid, started):
        return False
    _signal_group(pid, signal.SIGTERM)
    if leader and not wait_exit(pid, started, grace_s):
        _signal_group(pid, signal.SIGKILL)
        wait_exit(pid, started, 5.0)
    _reap(pid)
    # vLLM's engine and worker end after the server: wait for them, so their memory is free.
    if not all(wait_exit(member, start_ticks(member), grace_s) for member in _leftovers(pid, started)):
        _signal_group(pid, signal.SIGKILL)
    return True


def _leftovers(pid: int, started: int | None) -> list[int]:
    return group_members(pid, started) if started is not None and _PROC.is_dir() else []


@contextlib.contextmanager
def terminations_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise SystemExit (as Ctrl-C raises KeyboardInterrupt),
    so a half-started server is stopped by the caller's cleanup instead of being left running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # started with setsid: its process group id is its pid
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
