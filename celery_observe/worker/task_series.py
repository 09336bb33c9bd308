"""The series of one task name, kept compact: arrays of floats under one lock.

prometheus_client keeps each value in an object with a lock of its own, so a histogram
of 20 buckets is 22 objects; a worker held 12.9 KB per task name that way. Here a
histogram is one array of floats, a task's five status counters another, and one lock per
task name guards them all: the recorder writes under it (the main thread, or pool threads
with the threads pool) and the exposition copies a :class:`Snapshot` under it from the
HTTP server's render thread. The values follow prometheus_client's arithmetic (the same
float additions in the same order), so the page says what it would say.
"""

from __future__ import annotations

import math
import threading
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from typing import NamedTuple

from ..shapes import STATUSES

#: The index of each status in :attr:`TaskSeries.totals`.
STATUS_INDEX: dict[str, int] = {status: index for index, status in enumerate(STATUSES)}


class Layout:
    """Where a histogram of ``bounds`` keeps what in its array.

    One count per bucket (not cumulative: an observation adds to one slot; the
    exposition accumulates), the last bucket being ``+Inf``, then the sum of the observed
    values, then the Unix time the series was created.
    """

    __slots__ = ("_zeros", "bounds", "created", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(bound) for bound in bounds)
        if list(self.bounds) != sorted(set(self.bounds)) or not all(
                math.isfinite(bound) for bound in self.bounds):
            raise ValueError(f"histogram bounds must be finite and increasing, not {bounds!r}")
        self.sum = len(self.bounds) + 1
        self.created = self.sum + 1
        self._zeros = array("d", [0.0]) * (self.created + 1)

    def new(self, created: float) -> array[float]:
        values = self._zeros[:]
        values[self.created] = created
        return values

    def observe(self, values: array[float], value: float) -> None:
        """As ``Histogram.observe``: a value on a bound falls in that bound's bucket."""
        values[self.sum] += value
        values[bisect_left(self.bounds, value)] += 1.0


def new_count(created: float) -> array[float]:
    """A counter of one label set: [value, created]."""
    return array("d", (0.0, created))


class Snapshot(NamedTuple):
    """A consistent copy of one task's values, taken under its lock."""

    version: int
    created: float
    totals: tuple[float, ...]
    active: float
    timeouts: float
    durations: dict[str, array[float]]
    queue_wait: array[float] | None
    last_success: float | None
    errors: dict[str, array[float]]
    retries: dict[str, array[float]]


class TaskSeries:
    """Every per-task series of one task name.

    ``version`` grows with every change, under the lock, so the exposition can keep this
    task's rendered lines until the next change. Every status counter and the timeouts
    counter exist from the start (``rate()`` then sees each first outcome), created at
    ``created``; durations, errors and retries get a series when first observed, the
    queue wait with the first stamped message, the last success with the first success.
    """

    __slots__ = ("active", "created", "durations", "errors", "last_success", "lock", "name",
                 "queue_wait", "retries", "timeouts", "totals", "version")

    def __init__(self, name: str, created: float) -> None:
        self.name = name
        self.created = created
        self.version = 0
        self.lock = threading.Lock()
        self.totals = array("d", [0.0]) * len(STATUSES)
        self.active = 0.0
        self.timeouts = 0.0
        self.durations: dict[str, array[float]] = {}
        self.queue_wait: array[float] | None = None
        self.last_success: float | None = None
        self.errors: dict[str, array[float]] = {}
        self.retries: dict[str, array[float]] = {}

    def snapshot(self) -> Snapshot:
        with self.lock:
            return Snapshot(
                self.version, self.created, tuple(self.totals), self.active, self.timeouts,
                {status: values[:] for status, values in self.durations.items()},
                None if self.queue_wait is None else self.queue_wait[:], self.last_success,
                {key: values[:] for key, values in self.errors.items()},
                {key: values[:] for key, values in self.retries.items()})
