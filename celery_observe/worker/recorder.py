"""Turns the start and the outcome of each task execution into metric updates.

Runs in the worker's main process on the hot path of every task: one dict lookup finds
the task's :class:`~.task_series.TaskSeries`, and its values change under its one lock.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from ..cardinality import OVERFLOW, BoundedLabel
from .history import TaskHistory
from .metrics import TaskMetrics
from .outcome import Outcome
from .task_series import (
    ACTIVE,
    DURATION_BLOCKS,
    ERROR,
    LAST_SUCCESS,
    RETRY,
    STATUS_INDEX,
    TIMEOUTS,
    TOTALS,
    WAIT,
    TaskSeries,
)

SUCCESS_INDEX = STATUS_INDEX["success"]

#: (task name, exception class) pairs with error or retry series of their own; further
#: pairs are counted as error_type (or reason) "other" of their task.
MAX_ERROR_SERIES = 1000


class Recorder:
    """Records task starts and outcomes on a :class:`TaskMetrics` and a :class:`TaskHistory`."""

    def __init__(self, metrics: TaskMetrics, history: TaskHistory, task_names: BoundedLabel,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.history = history
        self.task_names = task_names
        self._clock = clock
        self._wall_clock = wall_clock
        self._series: dict[str, TaskSeries] = {}
        self._lock = threading.Lock()
        # Class names come from code, but code can make classes, and names x classes can
        # multiply: the (task name, class) pairs are bounded, as task names are.
        self._pairs = {"error_type": 0, "reason": 0}

    def series(self, task_name: str) -> TaskSeries:
        """The series of ``task_name``, or of ``other`` past the cap on task names."""
        series = self._series.get(task_name)
        if series is None:
            name = self.task_names(task_name)
            with self._lock:
                series = self._series.get(name)
                if series is None:
                    series = self._series[name] = TaskSeries(name, self._wall_clock())
        return series

    def started(self, task_name: str, published_at: float | None = None) -> None:
        """A task began executing in the pool; ``published_at`` is its producer's stamp."""
        series = self.series(task_name)
        with series.lock:
            try:
                series.values[ACTIVE] += 1.0
                if published_at is not None:
                    now = self._wall_clock()
                    wait = max(0.0, now - published_at)  # raises before any change if bad
                    start = self.metrics.blocks.histogram(series, WAIT, now)
                    self.metrics.wait_layout.observe(series.values, start, wait)
            finally:
                series.version += 1  # a render that copied the values before is not kept

    def finished(self, task_name: str, outcome: Outcome, started_at: float | None,
                 task_id: str | None = None, queue: str | None = None) -> None:
        """A task execution ended; ``started_at`` is its monotonic start, None if it never ran.

        ``queue`` is the consumed queue the task was delivered from, ``other`` for a
        delivery that names none (see :mod:`.delivery`), None to count it under no queue.
        """
        series = self.series(task_name)
        elapsed = None if started_at is None else max(0.0, self._clock() - started_at)
        ended = self._wall_clock()
        status = outcome.status
        self.history.append((
            task_id, task_name, status, None if elapsed is None else ended - elapsed,
            ended, outcome.error_type))
        with series.lock:
            try:
                counted = self._change(series, outcome, elapsed, ended)
            finally:
                series.version += 1  # a render that copied the values before is not kept
        if not counted:  # ignored: frees the worker, is no outcome
            return
        if series.name != task_name:
            self.metrics.dropped_label_values.labels("task_name").inc()
        if queue == OVERFLOW:
            self.metrics.dropped_label_values.labels("queue").inc()
        self.metrics.outcomes.add(status, queue, ended)
        if outcome.error_type is not None:
            self.metrics.failure_rate.add(series.name)

    def _change(self, series: TaskSeries, outcome: Outcome, elapsed: float | None,
                ended: float) -> bool:
        """Apply one outcome to ``series`` (under its lock); False if it is no outcome."""
        values = series.values
        if elapsed is not None:
            values[ACTIVE] -= 1.0
        if outcome.timed_out:
            values[TIMEOUTS] += 1.0
        index = STATUS_INDEX.get(outcome.status)
        if index is None:
            return False
        values[TOTALS + index] += 1.0
        if index == SUCCESS_INDEX:
            values[LAST_SUCCESS] = ended
        blocks = self.metrics.blocks
        if elapsed is not None:
            start = blocks.histogram(series, DURATION_BLOCKS[index], ended)
            self.metrics.duration_layout.observe(series.values, start, elapsed)
        if outcome.error_type is not None:
            self._count(series, ERROR, outcome.error_type, "error_type", ended)
        if outcome.retry_reason is not None:
            self._count(series, RETRY, outcome.retry_reason, "reason", ended)
        return True

    def _count(self, series: TaskSeries, kind: str, class_name: str, label: str,
               now: float) -> None:
        """Add one to ``class_name``'s counter, or to ``other``'s past the cap on pairs."""
        blocks = self.metrics.blocks
        start = blocks.counter(series, kind, class_name, None)
        if start < 0:
            with self._lock:
                admitted = self._pairs[label] < MAX_ERROR_SERIES
                self._pairs[label] += admitted
            if not admitted:
                self.metrics.dropped_label_values.labels(label).inc()
                class_name = OVERFLOW
            # one copy of each name: each failure from a pool child brings its own
            start = blocks.counter(series, kind, sys.intern(class_name), now)
        series.values[start] += 1.0

    def all_series(self) -> list[TaskSeries]:
        """The series of every task name seen, in the order they were first seen."""
        with self._lock:
            return list(self._series.values())

    def counts(self) -> dict[str, int]:
        """Outcomes recorded so far, by status, over all task names."""
        return self.metrics.outcomes.by_status()
