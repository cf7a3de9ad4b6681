"""The command runner: real processes, redaction, timeouts, transient retries, recording."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from inferbox.errors import CommandError, CommandTimeout
from inferbox.runner import Command, RecordingRunner, Reply, RetryPolicy, ShellRunner, redact_argv


def test_runs_real_process_and_captures_output() -> None:
    result = ShellRunner().run(Command(("sh", "-c", "echo out; echo err >&2")))
    assert (result.exit_code, result.stdout, result.stderr) == (0, "out\n", "err\n")


def test_failure_raises_with_exit_code_and_stderr_tail() -> None:
    with pytest.raises(CommandError) as info:
        ShellRunner().run(Command(("sh", "-c", "echo boom >&2; exit 3")))
    assert info.value.exit_code == 3
    assert "boom" in str(info.value)
    assert ShellRunner().run(Command(("sh", "-c", "exit 3")), check=False).exit_code == 3


def test_missing_program_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match="'no-such-tool-xyz' not found on PATH"):
        ShellRunner().run(Command(("no-such-tool-xyz", "version")))


def test_timeout_kills_the_command() -> None:
    with pytest.raises(CommandTimeout, match=r"timed out after 0\.3s"):
        ShellRunner().run(Command(("sleep", "5"), timeout=0.3))


def test_transient_errors_are_retried_with_backoff(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    # Fails twice with a transient error, then succeeds.
    script = (f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
              "if [ $n -lt 3 ]; then echo 'dial tcp 127.0.0.1:6443: connect: connection refused' >&2; exit 1; fi; "
              "echo ok")
    pauses: list[float] = []
    runner = ShellRunner(RetryPolicy(attempts=4, first_delay_s=0.5), pause=pauses.append)
    assert runner.run(Command(("sh", "-c", script))).stdout == "ok\n"
    assert pauses == [0.5, 1.0]
    assert counter.read_text().strip() == "3"


def test_permanent_errors_are_not_retried(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    pauses: list[float] = []
    runner = ShellRunner(pause=pauses.append)
    with pytest.raises(CommandError):
        runner.run(Command(("sh", "-c", f"echo x >> {counter}; echo 'Error: chart not found' >&2; exit 1")))
    assert pauses == []
    assert counter.read_text().count("x") == 1


def test_secrets_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="inferbox.runner")
    cmd = Command(("sh", "-c", "echo hunter2 >&2; exit 1", "--password", "hunter2"), secrets=("hunter2",))
    with pytest.raises(CommandError) as info:
        ShellRunner().run(cmd)
    assert "hunter2" not in caplog.text
    assert "hunter2" not in str(info.value)
    assert "***" in caplog.text


def test_secret_flags_are_redacted_in_display() -> None:
    argv = ["helm", "registry", "login", "--password", "p1", "--token=t1", "--username", "me"]
    assert redact_argv(argv) == ["helm", "registry", "login", "--password", "***", "--token=***",
                                 "--username", "me"]


def test_recording_runner_replies_by_longest_prefix_and_is_strict() -> None:
    runner = RecordingRunner({("helm",): Reply("generic"), ("helm", "list"): [Reply("first"), Reply("again")]},
                             strict=True)
    assert runner.run(Command(("helm", "list", "-A"))).stdout == "first"
    assert runner.run(Command(("helm", "list"))).stdout == "again"
    assert runner.run(Command(("helm", "list"))).stdout == "again"
    assert runner.run(Command(("helm", "version"))).stdout == "generic"
    with pytest.raises(AssertionError, match="unexpected command: kind get clusters"):
        runner.run(Command(("kind", "get", "clusters")))
    runner.note("wait: something")
    assert runner.lines()[-1] == "# wait: something"


def test_a_missing_pinned_tool_names_the_task_that_installs_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(CommandError, match=r"'kind' not found on PATH \(`\.venv/bin/invoke tools` installs the "
                                           r"pinned one into \.inferbox/bin\)"):
        ShellRunner().run(Command(("kind", "get", "clusters"), timeout=5, mutating=False))
