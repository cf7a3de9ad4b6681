"""The tenant tasks as a user meets them: help, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

INVOKE = [sys.executable, "-m", "invoke"]
TASKS = {"tenants-apply", "tenants-render", "tenant-create", "tenant-delete", "keys", "token", "verify-isolation"}


def invoke(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INVOKE, *args], cwd=root, capture_output=True, text=True, timeout=120, check=False)


def test_tenant_tasks_are_listed(root: Path) -> None:
    # Help text for every task and flag is checked for all tasks in test_tasks.py.
    listing = invoke(root, "--list")
    assert listing.returncode == 0, listing.stderr
    listed = {line.split()[0] for line in listing.stdout.splitlines()[2:] if line.startswith("  ")
              and not line.startswith("   ")}
    assert listed >= TASKS


def test_unknown_tenant_is_a_clear_error(root: Path) -> None:
    result = invoke(root, "token", "--tenant", "tenant-z")
    assert result.returncode == 1
    assert "no tenant 'tenant-z' is declared (known: tenant-a, tenant-b, tenant-c)" in result.stderr
    assert "Traceback" not in result.stderr


def test_tenant_delete_without_yes_and_without_a_terminal_deletes_nothing(root: Path) -> None:
    result = subprocess.run([*INVOKE, "tenant-delete", "tenant-a", "--context", "no-such-context"], cwd=root,
                            capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert "not confirmed: nothing deleted" in result.stderr
