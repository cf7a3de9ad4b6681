"""Commands in messages that work as printed, in a fresh shell.

A message that tells the user to run a task names it through :func:`invoke`: plain
``invoke TASK`` when the ``invoke`` on PATH is this environment's (an activated venv), else the
path of this environment's ``invoke`` from the working directory (``.venv/bin/invoke TASK`` after
``./quickstart``), which needs no activation.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def invoke_program() -> str:
    """How to start this environment's ``invoke`` from here."""
    own = Path(sys.prefix) / "bin" / "invoke"
    on_path = shutil.which("invoke")
    if on_path is not None and own.exists() and Path(on_path).resolve() == own.resolve():
        return "invoke"
    if not own.exists():
        return "invoke"  # not installed as a script (e.g. python -m invoke): the documented name
    relative = os.path.relpath(own, Path.cwd())
    return relative if not relative.startswith("../../") else str(own)


def invoke(args: str) -> str:
    """``invoke <args>`` as it runs from here: ``invoke(\"status\")`` -> ``.venv/bin/invoke status``."""
    return f"{invoke_program()} {args}".strip()
