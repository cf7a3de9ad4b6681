"""Shared test setup: the project root, settings built from the real versions.toml, goldens."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from inferbox import PROJECT_ROOT
from inferbox.config import Settings, build_settings

GOLDEN_DIR = Path(__file__).parent / "golden"
SHARED_CRDS = PROJECT_ROOT.parent / "shared" / "crds"
# `invoke bundle` writes the CRDs the pinned charts render here.
BUNDLE_CRDS = PROJECT_ROOT / ".inferbox" / "bundle" / "crds"


def upstream_crds() -> Path | None:
    """Where the upstream CRDs are: $INFERBOX_CRDS, ../shared/crds, or a bundle's crds/."""
    for candidate in (os.environ.get("INFERBOX_CRDS"), SHARED_CRDS, BUNDLE_CRDS):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def upstream_crds_dir() -> Path:
    """The upstream CRD folder, or skip saying how to get one (fail in CI)."""
    if (found := upstream_crds()) is not None:
        return found
    why = (f"no upstream CRDs: not in $INFERBOX_CRDS, {SHARED_CRDS} or {BUNDLE_CRDS}; `.venv/bin/invoke bundle` "
           "writes the pinned charts' CRDs to .inferbox/bundle/crds (or set INFERBOX_CRDS to a folder of CRDs)")
    if os.environ.get("INFERBOX_TESTENV_REQUIRED") == "1":
        pytest.fail(why)
    pytest.skip(why)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-goldens", action="store_true", help="rewrite golden files from current output")
    parser.addoption("--kubeconfig", type=Path, default=None,
                     help="run the cluster tests against this cluster instead of the embedded control plane")
    parser.addoption("--kube-context", default=None, help="context of --kubeconfig (default: its current one)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """INFERBOX_SKIP_TORCH=1 (no 5 GiB PyTorch download): the tests that need it skip, saying so."""
    if os.environ.get("INFERBOX_SKIP_TORCH") != "1":
        return
    skip = pytest.mark.skip(reason="INFERBOX_SKIP_TORCH=1: PyTorch (about 5 GiB from PyPI) is not installed")
    for item in items:
        if item.get_closest_marker("torch"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _printed_invoke(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands in messages name invoke as a fresh shell after ./quickstart does (inferbox.hints):
    fixed here, so goldens and messages do not depend on an activated venv. test_printed_commands
    checks the real choice in subprocesses."""
    from inferbox import hints

    monkeypatch.setattr(hints, "invoke_program", lambda: ".venv/bin/invoke")


@pytest.fixture(scope="session")
def helm_cli() -> Path:
    """A helm binary for render checks: the test control plane's build (helm from the npm layer
    pinned in versions.toml [testenv]), else one on PATH."""
    from inferbox.testenv import find_binaries, load_pins

    if found := find_binaries(load_pins(PROJECT_ROOT / "versions.toml")):
        return found.helm
    if on_path := shutil.which("helm"):
        return Path(on_path)
    why = "no helm: run `.venv/bin/python -m inferbox.testenv build` (or `.venv/bin/invoke tools`) first"
    if os.environ.get("INFERBOX_TESTENV_REQUIRED") == "1":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture
def root() -> Path:
    return PROJECT_ROOT


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        overrides.setdefault("state_dir", tmp_path / "state")
        overrides.setdefault("bin_dir", tmp_path / "bin")
        return build_settings(PROJECT_ROOT, **overrides)

    return make


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """Compare text with tests/golden/<name>; --update-goldens rewrites it (review the diff)."""
    update = request.config.getoption("--update-goldens") or os.environ.get("INFERBOX_UPDATE_GOLDENS") == "1"

    def check(name: str, actual: str) -> None:
        path = GOLDEN_DIR / name
        if update or not path.exists():
            if not update:
                pytest.fail(f"golden {path} missing: run pytest --update-goldens and review it")
            path.write_text(actual)
            return
        expected = path.read_text()
        assert actual == expected, f"output differs from golden {path.name} (pytest --update-goldens to accept)"

    return check
