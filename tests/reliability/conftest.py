"""The reliability suite prints what it measured (latencies, counts, sizes) after the run.

Its tests assert behaviour; the figures they record are what README's "guarantees"
section quotes, so a reader can check them against any CI log.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

MEASURED: list[tuple[str, str, str]] = []


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``figure(what, value)`` records one measured figure of the calling test."""
    def record(what: str, value: str) -> None:
        MEASURED.append((request.node.name, what, value))
    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not MEASURED:
        return
    terminalreporter.section("reliability figures")
    for test, what, value in MEASURED:
        terminalreporter.write_line(f"{test}: {what}: {value}")
