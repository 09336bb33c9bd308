"""Reading one test worker's metrics, with assertions whose failures say what was counted.

A task's outcome is counted in the worker's main process just after the task's result is
stored, so a test that has its results may still find the counter one behind: the count
assertions wait (up to the settings' timeout) for the counts to be reached. Counters never
go down, so a count already past the expected one fails at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..shapes import STATUSES
from .metrics import Metrics

if TYPE_CHECKING:
    from ..cluster.client import Cluster

TASK_TOTAL = "celery_task_total"
FAULTS = "celery_observe_internal_errors_total"


class Served(Protocol):
    """What the reader needs of a test worker (in-process or a subprocess)."""

    hostname: str

    def metrics(self) -> Metrics: ...


def _shown(counts: dict[str, int]) -> str:
    return " ".join(f"{status}={count}" for status, count in counts.items())


class MetricsReader:
    """The metrics of one observed test worker, read from its ``/metrics`` page."""

    def __init__(self, worker: Served, cluster: Callable[[], Cluster],
                 timeout: float = 10.0) -> None:
        self.worker = worker
        self.timeout = timeout
        self._cluster = cluster  # built on first use: only durations need remote control

    def samples(self) -> Metrics:
        """Every sample the worker serves now."""
        return self.worker.metrics()

    def value(self, name: str, **labels: str) -> float | None:
        """The sample ``name`` with exactly ``labels``, or None if the worker has none."""
        return self.samples().value(name, **labels)

    def task_counts(self, task: str) -> dict[str, int]:
        """``celery_task_total`` of ``task`` by status (0 for a status not seen yet)."""
        samples = self.samples()
        return {status: int(samples.value(TASK_TOTAL, task_name=task, status=status) or 0)
                for status in STATUSES}

    def assert_task_counts(self, task: str, *, timeout: float | None = None,
                           **expected: int) -> None:
        """Assert the worker counted ``task``'s outcomes as ``expected`` (``success=3,
        failure=0``; statuses not named are not checked), waiting up to ``timeout`` s."""
        __tracebackhide__ = True  # pytest shows the test's line, then the message
        unknown = sorted(set(expected) - set(STATUSES))
        if unknown:
            raise TypeError(f"assert_task_counts() counts {', '.join(STATUSES)}; "
                            f"not {', '.join(unknown)}")
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            counts = self.task_counts(task)
            got = {status: counts[status] for status in expected}
            if got == expected:
                return
            over = any(got[status] > count for status, count in expected.items())
            if over or time.monotonic() > deadline:
                waited = "" if over else f" after waiting {wait:g} s"
                raise AssertionError(
                    f"{TASK_TOTAL} of {task!r} on {self.worker.hostname}: expected "
                    f"{_shown(expected)}, counted {_shown(got)}{waited}")
            time.sleep(0.02)

    def durations(self, task: str) -> list[float]:
        """How long each run of ``task`` the worker remembers took (its task history)."""
        history = self._cluster().history(limit=1000, task=task)
        return [entry["duration_seconds"] for entry in history["tasks"]
                if entry["worker"] == self.worker.hostname
                and entry["duration_seconds"] is not None]

    def assert_duration_under(self, task: str, seconds: float, *,
                              timeout: float | None = None) -> None:
        """Assert every run of ``task`` the worker finished took less than ``seconds``
        (waiting up to ``timeout`` s for a first run to be remembered)."""
        __tracebackhide__ = True  # pytest shows the test's line, then the message
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while not (durations := self.durations(task)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{task!r} has no finished run on "
                                     f"{self.worker.hostname} after waiting {wait:g} s")
            time.sleep(0.05)
        slowest = max(durations)
        if slowest >= seconds:
            raise AssertionError(
                f"the slowest of {len(durations)} runs of {task!r} on "
                f"{self.worker.hostname} took {slowest:.3f} s, not under {seconds:g} s")

    def internal_faults(self) -> dict[str, int]:
        """Faults celery-observe swallowed in the worker, by component."""
        return {dict(labels)["component"]: int(value)
                for (name, labels), value in self.samples().items()
                if name == FAULTS and value}

    def assert_no_internal_faults(self) -> None:
        """Assert celery-observe counted no fault of its own in the worker."""
        __tracebackhide__ = True  # pytest shows the test's line, then the message
        faults = self.internal_faults()
        if faults:
            listed = ", ".join(f"{component}={count}"
                               for component, count in sorted(faults.items()))
            raise AssertionError(
                f"celery-observe counted internal faults on {self.worker.hostname}: "
                f"{listed} ({FAULTS}; the worker log has the first traceback of each)")
