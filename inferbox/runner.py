"""The one way the project runs external programs.

Commands are argv tuples, never shell strings. :class:`ShellRunner` runs them through ``sh``
(the only module that imports it); :class:`RecordingRunner` records them instead, which is what
``--dry-run`` prints and what the tests assert on. Secrets never reach a log line.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import sh

from inferbox.errors import CommandError, CommandTimeout
from inferbox.hints import invoke

log = logging.getLogger("inferbox.runner")

REDACTED = "***"
# Flags whose value is a secret wherever they appear (``--flag value`` or ``--flag=value``).
_SECRET_FLAG = re.compile(r"^--[\w-]*(password|token|secret|private-key)[\w-]*$", re.IGNORECASE)

# stderr fragments of failures that go away by themselves: API server restarting, webhook
# endpoints not yet ready, registry hiccups. Anything else fails at once.
TRANSIENT_ERRORS = (
    "connection refused",
    "connection reset by peer",
    "i/o timeout",
    "tls handshake timeout",
    "context deadline exceeded",
    "etcdserver: request timed out",
    "the server is currently unable to handle the request",
    "failed calling webhook",
    "no endpoints available for service",
    "unexpected eof",
    "http2: client connection lost",
    "too many requests",
    "503 service unavailable",
)


# The tools `invoke tools` installs (versions.toml [tools]); named in the "not found" error.
PINNED_TOOLS = frozenset({"kind", "minikube", "helm", "kubectl"})


@dataclass(frozen=True)
class Command:
    """One program invocation. ``mutating=False`` marks read-only queries."""

    argv: tuple[str, ...]
    timeout: float | None = 300.0
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: str | None = None
    secrets: tuple[str, ...] = ()
    mutating: bool = True
    retry_transient: bool = True

    def display(self) -> str:
        """The command line as a user could paste it, secrets replaced by ``***``."""
        return redact(shlex.join(redact_argv(self.argv)), self.secrets)


@dataclass(frozen=True)
class Result:
    command: Command
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Runner(Protocol):
    """What tool wrappers depend on; a real or a recording implementation."""

    dry_run: bool

    def run(self, command: Command, *, check: bool = True) -> Result: ...


def redact_argv(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if _SECRET_FLAG.match(name):
            if eq:
                out.append(f"{name}={REDACTED}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(arg)
    return out


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def is_transient(stderr: str) -> bool:
    lowered = stderr.lower()
    return any(fragment in lowered for fragment in TRANSIENT_ERRORS)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures only."""

    attempts: int = 4
    first_delay_s: float = 1.0
    max_delay_s: float = 15.0

    def delays(self) -> list[float]:
        return [min(self.first_delay_s * 2**i, self.max_delay_s) for i in range(self.attempts - 1)]


class ShellRunner:
    """Runs commands for real through ``sh``, logging each redacted command line."""

    dry_run = False

    def __init__(self, retry: RetryPolicy | None = None, pause: Callable[[float], None] = time.sleep) -> None:
        self.retry = retry or RetryPolicy()
        # Backoff between retries of a failed command (not a wait for a condition).
        self._pause = pause

    def run(self, command: Command, *, check: bool = True) -> Result:
        delays = self.retry.delays() if command.retry_transient else []
        for attempt in range(len(delays) + 1):
            result = self._run_once(command)
            if result.ok or attempt == len(delays) or not is_transient(result.stderr):
                break
            log.warning("transient failure (%s), retrying in %.0fs: %s",
                        _last_line(redact(result.stderr, command.secrets)), delays[attempt], command.display())
            self._pause(delays[attempt])
        if check and not result.ok:
            raise CommandError(command.display(), result.exit_code, redact(result.stderr, command.secrets))
        return result

    def _run_once(self, command: Command) -> Result:
        log.info("$ %s", command.display())
        started = time.monotonic()
        try:
            program = sh.Command(command.argv[0])
        except sh.CommandNotFound:
            hint = (f" (`{invoke('tools')}` installs the pinned one into .inferbox/bin)"
                    if command.argv[0] in PINNED_TOOLS else "")
            raise CommandError(command.display(), None, "",
                               reason=f"{command.argv[0]!r} not found on PATH{hint}") from None
        try:
            proc = program(
                *command.argv[1:],
                _env={**os.environ, **command.env},
                _in=command.stdin,
                _timeout=command.timeout,
                _ok_code=list(range(256)),
                _return_cmd=True,
                _tty_out=False,
                # Chunks, not lines: nothing reads the output while it streams, and a line
                # at a time costs seconds on a 5 MB `helm template` of kube-prometheus-stack.
                _out_bufsize=1 << 16,
                _err_bufsize=1 << 16,
                _internal_bufsize=1 << 20,
            )
        except sh.TimeoutException as exc:
            raise CommandTimeout(command.display(), None, "", reason=f"timed out after {command.timeout}s") from exc
        stdout = proc.stdout.decode(errors="replace") if isinstance(proc.stdout, bytes) else str(proc.stdout)
        stderr = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else str(proc.stderr)
        return Result(command, proc.exit_code, stdout, stderr, time.monotonic() - started)


@dataclass
class Reply:
    stdout: str = ""
    exit_code: int = 0
    stderr: str = ""


class RecordingRunner:
    """Records commands instead of running them.

    Used for ``--dry-run`` (every command succeeds with empty output, as on a fresh cluster)
    and in tests, where ``replies`` maps an argv prefix to canned output. In ``strict`` mode
    a command with no matching reply is an error, so a test notices an unexpected call.
    """

    def __init__(self, replies: Mapping[tuple[str, ...], Reply | Sequence[Reply]] | None = None,
                 *, strict: bool = False, dry_run: bool = True) -> None:
        self.dry_run = dry_run
        self.strict = strict
        self.commands: list[Command] = []
        # Commands and notes (waits, API applies) in the order they happened: the dry-run transcript.
        self.transcript: list[Command | str] = []
        self._replies: dict[tuple[str, ...], list[Reply]] = {
            key: [value] if isinstance(value, Reply) else list(value) for key, value in (replies or {}).items()
        }

    def run(self, command: Command, *, check: bool = True) -> Result:
        self.commands.append(command)
        self.transcript.append(command)
        reply = self._reply_for(command.argv)
        result = Result(command, reply.exit_code, reply.stdout, reply.stderr)
        if check and not result.ok:
            raise CommandError(command.display(), reply.exit_code, reply.stderr)
        return result

    def _reply_for(self, argv: tuple[str, ...]) -> Reply:
        matches = [key for key in self._replies if argv[: len(key)] == key]
        if not matches:
            if self.strict:
                raise AssertionError(f"unexpected command: {shlex.join(argv)}")
            return Reply()
        queue = self._replies[max(matches, key=len)]
        # The last reply repeats, so a query can be answered any number of times.
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def note(self, text: str) -> None:
        """Record a step that is not a command (an API call or a wait) in the transcript."""
        self.transcript.append(text)

    def lines(self) -> list[str]:
        return [entry.display() if isinstance(entry, Command) else f"# {entry}" for entry in self.transcript]


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
