"""PromQL checked by Prometheus' own parser: the Go program in tools/promql-check.

``ensure_built(pin)`` builds it once per (pin, sources, Go version) into a cache folder outside
git (``$INFERBOX_TOOLS_CACHE``, else ``$XDG_CACHE_HOME/inferbox/tools``, else
``~/.cache/inferbox/tools``) as ``promql-check-<digest>/promql-check``, and refuses to build
when tools/promql-check/go.mod requires another prometheus module than versions.toml pins.
``check(binary, expressions)`` runs it once over all expressions and returns, for each, its parse
errors and the metric names its selectors reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from inferbox import PROJECT_ROOT
from inferbox.errors import InferboxError
from inferbox.locks import file_lock
from inferbox.observability.pins import PROMETHEUS_MODULE, ObservabilityPin
from inferbox.runner import Command, Runner, ShellRunner

TOOL_DIR = PROJECT_ROOT / "tools" / "promql-check"
BINARY_NAME = "promql-check"
_SOURCES = ("go.mod", "go.sum", "main.go")


class PromqlToolError(InferboxError):
    """promql-check cannot be built or run."""


class GoNotFound(PromqlToolError):
    """No Go toolchain: promql-check cannot be built."""


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from (named in every report)."""

    id: str
    expr: str


@dataclass(frozen=True)
class CheckResult:
    id: str
    errors: tuple[str, ...]
    metrics: tuple[str, ...]
    unnamed_selectors: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def default_cache_dir() -> Path:
    if env := os.environ.get("INFERBOX_TOOLS_CACHE"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inferbox" / "tools"


def find_go() -> str | None:
    """The Go tool on PATH, or the official installer's location; None when there is none."""
    found = shutil.which("go")
    if found:
        return found
    fallback = Path("/usr/local/go/bin/go")
    return str(fallback) if fallback.is_file() and os.access(fallback, os.X_OK) else None


def required_module_version(tool_dir: Path = TOOL_DIR) -> str | None:
    """The prometheus module version go.mod requires (what the Go tool will actually build)."""
    gomod = (tool_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(PROMETHEUS_MODULE)}\s+(v\S+)", gomod, re.MULTILINE)
    return match.group(1) if match else None


def check_module_matches_pin(pin: ObservabilityPin, tool_dir: Path = TOOL_DIR) -> None:
    required = required_module_version(tool_dir)
    if required != pin.prometheus_module_version:
        raise PromqlToolError(
            f"{tool_dir / 'go.mod'} requires {PROMETHEUS_MODULE} {required or '(nothing)'} but versions.toml "
            f"[observability] pins {pin.prometheus_module_version}: run `go get {PROMETHEUS_MODULE}@"
            f"{pin.prometheus_module_version} && go mod tidy` in {tool_dir}")


def build_digest(pin: ObservabilityPin, go_version: str, tool_dir: Path = TOOL_DIR) -> str:
    """Cache key: the pin, the program's sources and the Go version that compiles them."""
    digest = hashlib.sha256()
    for part in (pin.prometheus_module_version, go_version):
        digest.update(part.encode() + b"\0")
    for name in _SOURCES:
        digest.update(name.encode() + b"\0" + (tool_dir / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ensure_built(pin: ObservabilityPin, *, runner: Runner | None = None, cache_dir: Path | None = None,
                 tool_dir: Path = TOOL_DIR, go: str | None = None) -> Path:
    """The promql-check binary for ``pin``, built first when the cache has none."""
    runner = runner or ShellRunner()
    go = go or find_go()
    if go is None:
        raise GoNotFound("promql-check needs the Go toolchain (1.25 or newer) to build; `go` is not on PATH "
                         "(https://go.dev/dl/)")
    check_module_matches_pin(pin, tool_dir)
    go_version = runner.run(Command((go, "env", "GOVERSION"), timeout=60, mutating=False)).stdout.strip()
    cache_dir = cache_dir or default_cache_dir()
    digest = build_digest(pin, go_version, tool_dir)
    home = cache_dir / f"{BINARY_NAME}-{digest}"
    binary = home / BINARY_NAME
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir / f".{BINARY_NAME}-{digest}.lock", what=f"the {BINARY_NAME} build {digest}"):
        if os.access(binary, os.X_OK):
            return binary
        tmp = Path(tempfile.mkdtemp(prefix=f".{BINARY_NAME}-{digest}-", dir=cache_dir))
        try:
            env = {"CGO_ENABLED": "0",
                   # go.sum is complete: the build must not edit go.mod/go.sum, nor stamp git state.
                   "GOFLAGS": " ".join(filter(None, [os.environ.get("GOFLAGS", ""), "-mod=readonly",
                                                     "-buildvcs=false"]))}
            runner.run(Command((go, "-C", str(tool_dir), "build", "-trimpath", "-o", str(tmp / BINARY_NAME), "."),
                               timeout=900, env=env, mutating=False))
            built = runner.run(Command((str(tmp / BINARY_NAME), "-version"), timeout=30, mutating=False))
            if built.stdout.strip() != pin.prometheus_module_version:
                raise PromqlToolError(f"promql-check was built with {PROMETHEUS_MODULE} {built.stdout.strip()!r}, "
                                      f"not the pinned {pin.prometheus_module_version}")
            if home.exists():  # an incomplete leftover: the binary was not executable
                shutil.rmtree(home)
            os.rename(tmp, home)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return binary


def check(binary: Path, expressions: Sequence[Expression], *, runner: Runner | None = None) -> list[CheckResult]:
    """Parse every expression with Prometheus' parser; results in input order."""
    if not expressions:
        return []
    ids = [e.id for e in expressions]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise PromqlToolError("expression ids must be unique: " + ", ".join(duplicates))
    runner = runner or ShellRunner()
    stdin = "".join(json.dumps({"id": e.id, "expr": e.expr}) + "\n" for e in expressions)
    result = runner.run(Command((str(binary),), stdin=stdin, timeout=120, mutating=False, retry_transient=False))
    results = []
    for line in result.stdout.splitlines():
        if line.strip():
            data = json.loads(line)
            results.append(CheckResult(id=data["id"], errors=tuple(data["errors"]), metrics=tuple(data["metrics"]),
                                       unnamed_selectors=int(data.get("unnamed_selectors", 0))))
    if [r.id for r in results] != ids:
        raise PromqlToolError(f"promql-check answered {len(results)} results for {len(ids)} expressions")
    return results


