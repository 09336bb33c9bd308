"""Waiting for a condition with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeoutError(AssertionError, TimeoutError):
    """A wait ran out of time: a failed assertion to pytest, a ``TimeoutError`` to a script."""


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str,
               interval: float = 0.05) -> T:
    """Poll ``predicate`` every ``interval`` s until it returns something truthy, and return
    that (never None: a predicate of ``X | None`` gives an ``X``); raise
    :class:`WaitTimeoutError` naming ``what`` once ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
