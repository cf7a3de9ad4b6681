"""The local predictor's virtual environment (``.inferbox/local/venv``), built on first use.

It is separate from the project's .venv because the model server's dependencies conflict with the
platform's (kserve needs python-dateutil<3, kubernetes>=37.0.2 needs >=3) - the same separation a
cluster gives a predictor, whose model server runs in its own image. Each requirement set
(``models/local-predictor/*.txt``) is installed once; a stamp named after its digest records it, so
an edited requirements file is installed again and an unchanged one costs nothing.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from inferbox.locks import Log, heartbeat, stderr_log
from inferbox.runner import Command, Runner

# The requirement sets each local server needs (files under models/local-predictor/).
SERVER_REQUIREMENTS = {"sklearn": ("base",), "torch-mlp": ("base", "torch")}
INSTALL_TIMEOUT_S = 1800.0  # torch with its CUDA libraries is several GiB
# Said before a big download starts (PyPI's Linux torch wheel bundles CUDA; there is no CPU wheel).
SET_SIZES = {"torch": "PyTorch with CUDA, about 5 GiB on disk; INFERBOX_SKIP_TORCH=1 skips it for the tests"}


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

    def requirement_lines(self, name: str) -> list[str]:
        lines = (self.requirements_dir / f"{name}.txt").read_text().splitlines()
        wanted = [line.split("#", 1)[0].strip() for line in lines]
        extra = [self.kserve] if name == "base" else []
        return extra + [line for line in wanted if line]

    def _stamp(self, name: str) -> Path:
        lines = self.requirement_lines(name)
        digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
        return self.venv / f".inferbox-{name}-{digest}"

    def missing(self, server: str) -> list[str]:
        """Requirement sets the server needs that are not installed yet."""
        if not self.python.exists():
            return list(SERVER_REQUIREMENTS[server])
        return [name for name in SERVER_REQUIREMENTS[server] if not self._stamp(name).exists()]

    def ensure(self, server: str, runner: Runner, log: Log = stderr_log) -> list[str]:
        """Create the venv and install what ``server`` needs; returns the sets installed now.
        Says what it installs, how big where it is big, and keeps reporting while pip runs."""
        todo = self.missing(server)
        if not todo:
            return []
        if not self.python.exists():
            runner.run(Command((sys.executable, "-m", "venv", str(self.venv)), timeout=300))
        for name in todo:
            size = f", {SET_SIZES[name]}" if name in SET_SIZES else ""
            log(f"installing the local predictors' {name} requirements into {self.venv} (pip{size}) ...")
            with heartbeat(log, lambda s, name=name: f"still installing the {name} requirements ({s:.0f} s)", 30):
                runner.run(Command((str(self.python), "-m", "pip", "install", "--quiet",
                                    "--disable-pip-version-check", *self.requirement_lines(name)),
                                   timeout=INSTALL_TIMEOUT_S))
            for old in self.venv.glob(f".inferbox-{name}-*"):
                old.unlink()
            self._stamp(name).touch()
        return todo
