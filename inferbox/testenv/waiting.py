"""Poll a condition against a deadline (tests never sleep a fixed time)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "wait_for"]

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold in time; an AssertionError so pytest shows it as a test failure."""


def wait_for(condition: Callable[[], T | None], *, timeout: float, what: str,
             describe: Callable[[], str] | None = None) -> T:
    """Return the first truthy value of ``condition()``, polling with back-off until ``timeout`` seconds.

    ``describe`` is called on timeout to say what was seen instead (e.g. the
    object's current status), which makes failures readable.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f"; last seen: {describe()}" if describe else ""
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}{seen}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
