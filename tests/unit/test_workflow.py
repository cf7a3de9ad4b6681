"""The users' CI workflow cannot run here (no Docker), so it is linted with actionlint."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from inferbox.config import load_versions


def actionlint() -> str | None:
    gobin = Path(os.environ.get("GOBIN") or Path.home() / "go" / "bin") / "actionlint"
    return shutil.which("actionlint") or (str(gobin) if gobin.is_file() else None)


def test_workflows_pass_actionlint(root: Path) -> None:
    binary = actionlint()
    if binary is None:
        if os.environ.get("INFERBOX_TESTENV_REQUIRED") == "1":
            pytest.fail("actionlint missing in CI (.ci/run installs it)")
        lint = load_versions(root / "versions.toml").lint
        pytest.skip(f"actionlint not installed: GOFLAGS=-buildvcs=false go install "
                    f"{lint.actionlint_module}@{lint.actionlint_version}")
    workflows = sorted((root / ".github" / "workflows").glob("*.yml"))
    assert workflows
    result = subprocess.run([binary, *map(str, workflows)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_runs_the_readme_commands(root: Path) -> None:
    text = (root / ".github" / "workflows" / "platform.yml").read_text()
    for command in ("./quickstart test", "invoke tools", "invoke bootstrap", "invoke teardown"):
        assert command in text
