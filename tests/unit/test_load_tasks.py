"""The load tasks as a user meets them: help for every flag, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

INVOKE = [sys.executable, "-m", "invoke"]
TASKS = {"loadtest", "load-profiles"}


def invoke(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INVOKE, *args], cwd=root, capture_output=True, text=True, timeout=120, check=False)


def test_every_load_task_and_flag_has_help(root: Path) -> None:
    listing = invoke(root, "--list")
    assert listing.returncode == 0, listing.stderr
    listed = {line.split()[0] for line in listing.stdout.splitlines()[2:] if line.startswith("  ")
              and not line.startswith("   ")}
    assert listed >= TASKS
    for name in sorted(TASKS):
        text = invoke(root, "--help", name).stdout
        assert "Docstring:\n  none" not in text, f"{name} has no help text"
        flags = [line.strip() for line in text.split("Options:")[1].splitlines() if line.strip().startswith("-")]
        assert flags
        for flag in flags:
            assert len(flag.split(None, 1)) == 2, f"{name}: flag without help: {flag}"
    loadtest_help = invoke(root, "--help", "loadtest").stdout
    for flag in ("--profile", "--model", "--tenant", "--target", "--workers", "--host", "--i-own-this-host",
                 "--compare", "--prometheus-url", "--in-cluster", "--dry-run"):
        assert flag in loadtest_help


def test_a_foreign_host_is_refused_with_a_clear_exit(root: Path) -> None:
    result = invoke(root, "loadtest", "--host", "http://192.0.2.10:8080")
    assert result.returncode == 1
    assert "refusing to send load to http://192.0.2.10:8080" in result.stderr
    assert "--i-own-this-host" in result.stderr and "Traceback" not in result.stderr


def test_profiles_are_listed_and_unknown_ones_named(root: Path) -> None:
    listing = invoke(root, "load-profiles")
    assert listing.returncode == 0 and "smoke" in listing.stdout and "spike" in listing.stdout
    result = invoke(root, "loadtest", "--profile", "nope")
    assert result.returncode == 1
    assert "load/profiles.yaml: profiles: no profile 'nope'" in result.stderr
