"""The task layer as a user meets it: `invoke --list`, help text, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

INVOKE = [sys.executable, "-m", "invoke"]


def invoke(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INVOKE, *args], cwd=root, capture_output=True, text=True, timeout=120, check=False)


def test_every_task_is_listed_with_help(root: Path) -> None:
    listing = invoke(root, "--list")
    assert listing.returncode == 0, listing.stderr
    tasks = [line.split()[0] for line in listing.stdout.splitlines()[2:] if line.startswith("  ") and
             not line.startswith("   ")]
    assert {"bootstrap", "plan", "doctor", "tools", "status", "teardown", "check"} <= set(tasks)
    for task in tasks:
        help_text = invoke(root, "--help", task)
        assert help_text.returncode == 0
        assert "Docstring:\n  none" not in help_text.stdout, f"{task} has no help text"
        for line in help_text.stdout.split("Options:")[1].splitlines():
            if line.strip().startswith("-") and "--help" not in line:
                assert len(line.split(None, 1)) == 2, f"{task}: flag without help: {line.strip()}"


def test_plan_json_is_machine_readable(root: Path) -> None:
    result = invoke(root, "plan", "--json", "--gpu", "off")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["waves"][0][0] == "cert-manager"


@pytest.mark.parametrize("args", [("plan", "--gpu", "sometimes"), ("plan", "--provider", "k3d")])
def test_bad_flag_values_are_clear_errors(root: Path, args: tuple[str, ...]) -> None:
    result = invoke(root, *args)
    assert result.returncode == 1
    assert "is not one of" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("verify-isolation", "--timeout", "abc"), "--timeout: 'abc' is not a number"),
    (("dashboards", "--grafana-port", "3k"), "--grafana-port: '3k' is not a whole number"),
])
def test_a_typed_flag_with_a_wrong_value_is_one_line_not_a_traceback(root: Path, args: tuple[str, ...],
                                                                     message: str) -> None:
    result = invoke(root, *args)
    assert result.returncode == 1
    assert result.stderr.strip() == message and "Traceback" not in result.stderr
