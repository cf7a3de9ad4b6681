"""Every command the project prints works as printed, in a fresh shell: the README's quick start,
the quickstart script's messages and the commands inferbox's messages name (inferbox.hints).

Each command's task and flags are parsed by invoke's own parser against tasks.py; the README's
and the quickstart's are also run (``--help``) in a subprocess with a bare environment, from the
repository root, as a user who just ran ./quickstart would.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from invoke.parser import Parser

import tasks
from inferbox import PROJECT_ROOT

VENV_INVOKE = ".venv/bin/invoke"
# A shell without the venv on PATH: what a user has in a new terminal.
FRESH_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}


def readme_quick_start() -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    inline = re.findall(r"`(\.venv/bin/invoke [^`]+|\./quickstart[^`]*)`", section.replace("\n  ", " "))
    blocks = [line.split("#", 1)[0].strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)
              for line in block.splitlines()]
    return sorted({" ".join(c.split()) for c in inline + blocks if c})


def quickstart_messages() -> list[str]:
    return sorted(set(re.findall(r"'(\.venv/bin/invoke [^']+)'", (PROJECT_ROOT / "quickstart").read_text())))


def message_commands() -> list[str]:
    """The task argument of every invoke(...) hint in the package, placeholders filled in."""
    hint = re.compile(r"""\binvoke\((f?)(?:'([^']*)'|"([^"]*)")\)""")
    found = []
    for path in (PROJECT_ROOT / "inferbox").rglob("*.py"):
        for is_f, single, double in hint.findall(path.read_text()):
            body = single or double
            found.append(re.sub(r"\{[^}]*\}", "x", body) if is_f else body)
    from inferbox.bootstrap.doctor import ALTERNATIVES

    found += [task.replace("<ctx>", "x") for task, _ in ALTERNATIVES]
    return sorted(set(found))


def parse(args: str) -> None:
    Parser(contexts=tasks.namespace.to_contexts()).parse_argv(shlex.split(args))


def test_every_printed_task_and_flag_exists() -> None:
    printed = message_commands()
    assert len(printed) >= 15, printed  # the hints are found (bootstrap, status, tools, keys, ...)
    commands = [c.removeprefix(VENV_INVOKE + " ") for c in readme_quick_start() + quickstart_messages()
                if c.startswith(VENV_INVOKE)]
    assert commands, "the README's quick start names its tasks as .venv/bin/invoke TASK"
    for args in printed + commands:
        if args.startswith("--"):
            continue  # a core flag (--list)
        parse(args)  # raises ParseError naming an unknown task or flag


def test_the_quick_start_and_quickstart_commands_run_in_a_fresh_shell() -> None:
    assert (PROJECT_ROOT / VENV_INVOKE).is_file(), "./quickstart makes .venv/bin/invoke"
    for command in readme_quick_start() + quickstart_messages():
        argv = shlex.split(command)
        if argv[0] == "./quickstart":
            assert (PROJECT_ROOT / "quickstart").stat().st_mode & 0o111, "quickstart is executable"
            assert argv[1:2] in ([], ["test"], ["run"]), command
            continue
        task = next((a for a in argv[1:] if not a.startswith("-")), None)
        help_argv = [argv[0], "--help", task] if task else [argv[0], "--list"]
        done = subprocess.run(help_argv, cwd=PROJECT_ROOT, env=FRESH_ENV, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, f"{command}: {done.stderr}"


@pytest.mark.parametrize(("activated", "expected"), [(False, ".venv/bin/invoke status"), (True, "invoke status")])
def test_hints_name_invoke_as_it_runs_here(activated: bool, expected: str) -> None:
    env = dict(FRESH_ENV)
    if activated:
        env["PATH"] = f"{Path(sys.prefix) / 'bin'}:{env['PATH']}"
    if Path(sys.prefix).resolve() != (PROJECT_ROOT / ".venv").resolve():
        pytest.skip("the tests run outside the project's .venv (./quickstart makes it)")
    done = subprocess.run([sys.executable, "-c", "from inferbox.hints import invoke; print(invoke('status'))"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == expected
    # And the printed command runs there.
    ran = subprocess.run([*shlex.split(expected)[:1], "--help", "status"], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
