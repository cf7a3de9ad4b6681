"""``invoke tools``: put the pinned kind, helm, kubectl (and minikube) into the project's bin dir.

Per tool, the cheapest trustworthy source wins:

1. ``bin_dir/<tool>`` already reports the pinned version: nothing to do.
2. A binary on PATH reports exactly the pinned version: symlink it (no download).
3. Otherwise download the pinned release, verify its sha256 from versions.toml, extract the
   binary if the release is a .tar.gz, check it reports the pinned version, and move it into
   place with one atomic ``os.replace``. A half-written file never sits at ``bin_dir/<tool>``:
   everything is written to a temporary name in the same directory first.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Literal, Protocol

from inferbox.config import Settings, ToolPin, host_platform
from inferbox.errors import InferboxError, ToolInstallError
from inferbox.hints import invoke
from inferbox.runner import RetryPolicy, Runner, ShellRunner
from inferbox.tools.helm import Helm
from inferbox.tools.kind import Kind
from inferbox.tools.kubectl import Kubectl
from inferbox.tools.minikube import Minikube
from inferbox.ui import FitTable

log = logging.getLogger("inferbox.bootstrap.toolinstall")

DEFAULT_TOOLS = ("kind", "helm", "kubectl")
CHUNK = 1 << 16
# No pinned binary comes near this; the cap stops a hostile or corrupt archive from filling the disk.
MAX_BINARY_BYTES = 1 << 30
# HTTP statuses worth another try: the request may succeed unchanged a moment later.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

Action = Literal["already-installed", "linked-from-path", "downloaded"]


class _VersionTool(Protocol):
    def version(self) -> str: ...


_WRAPPERS: dict[str, Callable[[Runner, str], _VersionTool]] = {
    "kind": Kind,
    "helm": Helm,
    "kubectl": Kubectl,
    "minikube": Minikube,
}


@dataclass(frozen=True)
class ToolOutcome:
    tool: str
    version: str
    action: Action
    path: Path
    detail: str = ""


@dataclass(frozen=True)
class DownloadPolicy:
    """``timeout_s`` bounds each socket operation (connect, each read), not the whole transfer."""

    timeout_s: float = 60.0
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=4, first_delay_s=2.0, max_delay_s=15.0))


def version_matches(found: str, pinned: str) -> bool:
    """True when ``found`` is exactly the pinned release, a leading "v" aside.

    Any suffix must match too. "vX.Y.Z-dispatcher", "vX.Y.Z-eks-<hash>" or "vX.Y.Z-gke.N" are
    vendor rebuilds of X.Y.Z: their behaviour may differ and their bytes are not the ones whose
    sha256 versions.toml pins, so accepting them would quietly void the pin. A pin that itself
    carries a pre-release suffix ("X.Y.Z-rc.1") still matches exactly that build.
    """
    found, pinned = found.strip(), pinned.strip()
    return bool(found) and found.removeprefix("v") == pinned.removeprefix("v")


def install_tools(settings: Settings, runner: Runner | None = None, *, minikube: bool = False,
                  platform: tuple[str, str] | None = None, search_path: str | None = None,
                  policy: DownloadPolicy | None = None,
                  pause: Callable[[float], None] = time.sleep) -> list[ToolOutcome]:
    """Install kind, helm, kubectl (plus minikube when asked) into ``settings.bin_dir``."""
    runner = runner or ShellRunner()
    if runner.dry_run:
        # Version probes through a recording runner answer "" and would make every tool look
        # missing; a dry run must not download either. The task should not call this then.
        raise ToolInstallError("invoke tools does not support --dry-run (it only downloads and links files)")
    pins = settings.versions.tools
    names = (*DEFAULT_TOOLS, "minikube") if minikube else DEFAULT_TOOLS
    return [install_tool(name, getattr(pins, name), settings.bin_dir, runner, platform=platform,
                         search_path=search_path, policy=policy, pause=pause) for name in names]


def install_tool(name: str, pin: ToolPin, bin_dir: Path, runner: Runner, *,
                 platform: tuple[str, str] | None = None, search_path: str | None = None,
                 policy: DownloadPolicy | None = None,
                 pause: Callable[[float], None] = time.sleep) -> ToolOutcome:
    """Make ``bin_dir/<name>`` the pinned version of tool ``name``; see the module docstring."""
    if name not in _WRAPPERS:
        raise ToolInstallError(f"unknown tool {name!r}; known: {sorted(_WRAPPERS)}")
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / name

    current = _version_of(name, target, runner) if target.is_file() else None
    if current is not None and version_matches(current, pin.version):
        return ToolOutcome(name, current, "already-installed", target)

    on_path = _find_on_path(name, bin_dir, search_path)
    note = ""
    if on_path is not None:
        found = _version_of(name, on_path, runner)
        if found is not None and version_matches(found, pin.version):
            _link(on_path, target)
            detail = f"using PATH binary {on_path} {found}"
            log.info("%s: %s", name, detail)
            return ToolOutcome(name, found, "linked-from-path", target, detail)
        note = f"PATH has {found or 'no readable version'} ({on_path}), pin is {_v(pin.version)}: downloading"
        log.info("%s: %s", name, note)

    os_name, arch = platform or host_platform()
    version = _download_verified(name, pin, target, runner, os_name=os_name, arch=arch,
                                 policy=policy or DownloadPolicy(), pause=pause)
    return ToolOutcome(name, version, "downloaded", target, note or f"from {pin.download_url(os_name, arch)}")


def _v(version: str) -> str:
    """Pins are written "1.2.3", tools print "v1.2.3"; messages use the latter."""
    return "v" + version.removeprefix("v")


def outcomes_table(outcomes: Sequence[ToolOutcome]) -> FitTable:
    table = FitTable("inferbox tools")
    for column in ("tool", "version", "action", "path", "note"):
        table.add_column(column)
    for o in outcomes:
        table.add_row(o.tool, o.version, o.action, str(o.path), o.detail)
    return table


# --- version probes and PATH ---------------------------------------------------------------------


def _version_of(name: str, binary: Path, runner: Runner) -> str | None:
    """The version the binary reports, or None when it cannot say (not executable, crashes)."""
    try:
        version = _WRAPPERS[name](runner, str(binary)).version()
    except (InferboxError, ValueError) as exc:  # ValueError: kubectl printing something other than JSON
        log.debug("%s: version of %s unknown: %s", name, binary, exc)
        return None
    return version or None


def _find_on_path(name: str, bin_dir: Path, search_path: str | None) -> Path | None:
    """The tool on PATH, never our own bin dir (which may be on PATH and hold a stale copy)."""
    path = os.environ.get("PATH", "") if search_path is None else search_path
    own = bin_dir.resolve()
    dirs = [d for d in path.split(os.pathsep) if d and Path(d).resolve() != own]
    found = shutil.which(name, path=os.pathsep.join(dirs))
    if found is None:
        return None
    return Path(found).absolute()


def _link(source: Path, target: Path) -> None:
    # Build the link under a temporary name, then rename it over the target in one step.
    temp = target.with_name(f".{target.name}.{os.getpid()}.link")
    temp.unlink(missing_ok=True)
    try:
        temp.symlink_to(source)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


# --- download ------------------------------------------------------------------------------------


def _download_verified(name: str, pin: ToolPin, target: Path, runner: Runner, *, os_name: str, arch: str,
                       policy: DownloadPolicy, pause: Callable[[float], None]) -> str:
    """Download, verify and move the pinned binary into place; returns the version it reports."""
    platform_key = f"{os_name}-{arch}"
    expected = pin.sha256.get(platform_key)
    if expected is None:
        raise ToolInstallError(f"{name} {_v(pin.version)}: versions.toml has no sha256 for platform {platform_key} "
                               f"(pinned for: {', '.join(sorted(pin.sha256))}); install {name} {_v(pin.version)} "
                               f"on PATH yourself and rerun `{invoke('tools')}` to link it")
    url = pin.download_url(os_name, arch)
    member = pin.member(os_name, arch)
    temps: list[Path] = []
    try:
        downloaded, actual = _fetch_with_retry(name, url, target.parent, temps, policy=policy, pause=pause)
        if actual != expected:
            raise ToolInstallError(f"{name}: checksum mismatch for {url}: expected sha256 {expected}, got {actual}")
        binary = downloaded if member is None else _extract_member(name, downloaded, member, target.parent, temps)
        # The checksum proves these are the pinned bytes; asking the binary itself also catches a
        # versions.toml whose sha256 belongs to another release, before anything is in place.
        binary.chmod(0o755)
        found = _version_of(name, binary, runner)
        if found is None or not version_matches(found, pin.version):
            raise ToolInstallError(f"{name}: {url} matches its pinned sha256 but reports version "
                                   f"{found or '(none)'}, not {_v(pin.version)}: versions.toml is inconsistent")
        os.replace(binary, target)
        log.info("%s: installed %s from %s", name, found, url)
        return found
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


def _new_temp(directory: Path, name: str, temps: list[Path]) -> tuple[IO[bytes], Path]:
    # Same directory as the target, so the final os.replace is a rename on one filesystem.
    fd, name_on_disk = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
    path = Path(name_on_disk)
    temps.append(path)
    return os.fdopen(fd, "wb"), path


def _fetch_with_retry(name: str, url: str, directory: Path, temps: list[Path], *, policy: DownloadPolicy,
                      pause: Callable[[float], None]) -> tuple[Path, str]:
    delays = policy.retry.delays()
    for attempt in range(len(delays) + 1):
        try:
            return _fetch(name, url, directory, policy.timeout_s, temps)
        except _Transient as exc:
            if attempt == len(delays):
                raise ToolInstallError(f"{name}: download of {url} failed after {attempt + 1} attempts: "
                                       f"{exc}") from exc.__cause__
            log.warning("%s: download failed (%s), retrying in %.0fs", name, exc, delays[attempt])
            pause(delays[attempt])
    raise AssertionError("unreachable")


class _Transient(Exception):
    """A failure that may go away if the same request is repeated."""


def _fetch(name: str, url: str, directory: Path, timeout_s: float, temps: list[Path]) -> tuple[Path, str]:
    """Stream ``url`` into a temporary file; returns (path, sha256 hex)."""
    handle, path = _new_temp(directory, name, temps)
    digest = hashlib.sha256()
    complete = False
    try:
        with handle, urllib.request.urlopen(url, timeout=timeout_s) as response:
            size = 0
            while chunk := response.read(CHUNK):
                size += len(chunk)
                if size > MAX_BINARY_BYTES:
                    raise ToolInstallError(f"{name}: {url} is larger than {MAX_BINARY_BYTES} bytes; refusing it")
                digest.update(chunk)
                handle.write(chunk)
        complete = True
    except urllib.error.HTTPError as exc:
        message = f"HTTP {exc.code} {exc.reason}"
        if exc.code in RETRY_STATUSES:
            raise _Transient(message) from exc
        raise ToolInstallError(f"{name}: download of {url} failed: {message}") from exc
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        # Refused/reset connections, DNS hiccups, timeouts, truncated bodies: worth another try.
        raise _Transient(_describe(exc)) from exc
    except OSError as exc:
        # Local trouble (disk full, permissions): repeating the download would not help.
        raise ToolInstallError(f"{name}: cannot write the download of {url} into {directory}: {exc}") from exc
    finally:
        handle.close()
        if not complete:
            # Drop a failed attempt's partial file now rather than letting retries pile them up.
            path.unlink(missing_ok=True)
    return path, digest.hexdigest()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


# --- archives ------------------------------------------------------------------------------------


def _extract_member(name: str, archive: Path, member: str, directory: Path, temps: list[Path]) -> Path:
    """Copy one regular file out of a .tar.gz into a temporary file we name ourselves.

    Nothing is written under a name taken from the archive, so entries like ``../../x`` or
    absolute paths cannot land anywhere; links and devices are refused outright.
    """
    wanted = PurePosixPath(member)
    if wanted.is_absolute() or ".." in wanted.parts:
        raise ToolInstallError(f"{name}: archive member {member!r} must be a relative path without '..'")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            entry = _find_entry(tar, wanted)
            if entry is None:
                names = ", ".join(m.name for m in tar.getmembers()[:20])
                raise ToolInstallError(f"{name}: {member!r} not found in the downloaded archive (has: {names})")
            if not entry.isreg():
                raise ToolInstallError(f"{name}: archive member {member!r} is not a regular file")
            if entry.size > MAX_BINARY_BYTES:
                raise ToolInstallError(f"{name}: archive member {member!r} is {entry.size} bytes, over the limit")
            source = tar.extractfile(entry)
            if source is None:
                raise ToolInstallError(f"{name}: archive member {member!r} cannot be read")
            handle, path = _new_temp(directory, name, temps)
            with handle, source:
                shutil.copyfileobj(source, handle, CHUNK)
            return path
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ToolInstallError(f"{name}: downloaded file is not a readable .tar.gz: {exc}") from exc


def _find_entry(tar: tarfile.TarFile, wanted: PurePosixPath) -> tarfile.TarInfo | None:
    # Archives name members "linux-amd64/helm" or "./linux-amd64/helm"; compare normalised paths.
    for entry in tar.getmembers():
        if PurePosixPath(entry.name.removeprefix("./")) == wanted:
            return entry
    return None
