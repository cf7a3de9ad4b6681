"""The project's exception tree.

Every error a user can meet derives from :class:`InferboxError`; tasks turn it into
``invoke.Exit`` with the message, so a user sees one clear line (or table), never a trace.
"""

from __future__ import annotations

from collections.abc import Sequence


class InferboxError(Exception):
    """Base for every error the project raises on purpose."""


class ConfigError(InferboxError):
    """A configuration file is invalid; each problem names the file and the field."""

    def __init__(self, path: str, problems: Sequence[tuple[str, str]]) -> None:
        self.path = path
        self.problems = list(problems)
        lines = [f"{path}: {field}: {message}" for field, message in self.problems]
        super().__init__("invalid configuration\n  " + "\n  ".join(lines))


class CommandError(InferboxError):
    """An external command failed; carries the redacted command line and the output tail."""

    def __init__(self, display: str, exit_code: int | None, stderr: str, *, reason: str = "") -> None:
        self.display = display
        self.exit_code = exit_code
        self.stderr = stderr
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        what = reason or (f"exit code {exit_code}" if exit_code is not None else "failed")
        super().__init__(f"command failed ({what}): {display}" + (f"\n{tail}" if tail else ""))


class CommandTimeout(CommandError):
    """An external command ran past its timeout and was killed."""


class ToolInstallError(InferboxError):
    """A pinned tool could not be installed (download failed, checksum mismatch, bad archive)."""


class ClusterError(InferboxError):
    """The cluster cannot be created, reached or used."""


class KubeError(InferboxError):
    """A Kubernetes API call failed; ``status`` is the HTTP status when the server answered."""

    def __init__(self, message: str, status: int | None = None, reason: str = "") -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)


class NotFound(KubeError):
    """The object does not exist (404)."""


class Conflict(KubeError):
    """The object exists or changed underneath us (409)."""


class Forbidden(KubeError):
    """RBAC or admission refused the request (403)."""


class Invalid(KubeError):
    """The server rejected the object as invalid (422)."""


class WaitTimeout(InferboxError):
    """A health wait ran out of time; the message is a full report of what was seen."""

    def __init__(self, report: str, *, resource: str, phase: str | None = None) -> None:
        self.resource = resource
        self.phase = phase
        super().__init__(report)


class PlanError(InferboxError):
    """The install plan is malformed (unknown dependency, cycle, unknown chart)."""


class PhaseFailed(InferboxError):
    """A phase of the install plan failed; wraps the cause with the phase name."""

    def __init__(self, phase: str, cause: BaseException) -> None:
        self.phase = phase
        self.cause = cause
        super().__init__(f"phase {phase!r} failed: {cause}")
