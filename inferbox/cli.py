"""Glue for tasks.py: one console, settings from flags, domain errors turned into exits."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from inferbox import PROJECT_ROOT
from inferbox.config import Settings, build_settings, default_state_dir
from inferbox.errors import InferboxError


def _clean_flag_errors() -> None:
    """A typed flag given a value of another type (``--timeout abc``) is a ParseError naming the
    flag, which invoke prints in one line with exit 1, instead of a ValueError traceback: invoke
    3 casts with the default's type in ``Argument.set_value`` and lets the error escape."""
    from invoke.exceptions import ParseError
    from invoke.parser.argument import Argument

    original = Argument.set_value
    if getattr(original, "_inferbox", False):
        return

    def set_value(self: Argument, value: Any, cast: bool = True) -> None:
        try:
            original(self, value, cast)
        except (TypeError, ValueError):
            kind = {int: "a whole number", float: "a number"}.get(self.kind, self.kind.__name__)
            raise ParseError(f"--{self.name.replace('_', '-')}: {value!r} is not {kind}") from None

    set_value._inferbox = True  # type: ignore[attr-defined]
    Argument.set_value = set_value  # type: ignore[method-assign]


_clean_flag_errors()

# soft_wrap: a message or a list line is printed whole (a terminal wraps it), never split by Rich
# mid-command; tables are still laid out to the width (inferbox.ui.FitTable lists what does not fit).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def settings(**flags: Any) -> Settings:
    """Settings from versions.toml and the task's flags (an explicit flag wins)."""
    return build_settings(PROJECT_ROOT, **flags)


def setup_logging(state_dir: os.PathLike[str] | None = None, *, verbose: bool = False) -> None:
    """Commands are always logged to .inferbox/inferbox.log; on stderr with --verbose."""
    root = logging.getLogger("inferbox")
    if root.handlers:
        return
    root.setLevel(logging.INFO)
    # markup=False: a log message carries names, paths and command output, printed as they are.
    handler = RichHandler(console=err_console, show_path=False, show_time=False, markup=False)
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    root.addHandler(handler)
    if state_dir is not None:
        os.makedirs(state_dir, exist_ok=True)
        file_handler = logging.FileHandler(os.path.join(state_dir, "inferbox.log"))
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(file_handler)


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a domain error into a clean, non-zero exit with its message (and table, if any)."""
    try:
        yield
    except InferboxError as exc:
        table = getattr(exc, "table", None)
        if table is not None:
            err_console.print(table, soft_wrap=True)  # a FitTable never cuts a cell
        # The message is text, never Rich markup: it quotes file contents, names, paths, patterns
        # ("[/]" or "[a-z0-9]" in a tenant file must be shown as written, not parsed).
        err_console.print(Text.assemble(("error:", "bold red"), " ", str(exc)), soft_wrap=True)
        raise Exit(code=1) from None


def warn(message: str) -> None:
    """``warning:`` and the message (plain text, never markup) on stderr."""
    from inferbox.ui import warning

    err_console.print(warning(message), soft_wrap=True)


def state_dir() -> Path:
    """The local state folder (.inferbox), without reading any configuration file."""
    return default_state_dir(PROJECT_ROOT)


def confirm(question: str) -> bool:
    """Ask on a terminal; with no one to ask (scripts, CI) the answer is no: pass --yes there."""
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def with_event_log(settings: Settings) -> Settings:
    return replace(settings, event_log=settings.state_dir / "bootstrap-events.jsonl")


__all__ = ["Exit", "confirm", "console", "err_console", "exit_on_error", "settings", "setup_logging",
           "state_dir", "warn", "with_event_log"]
