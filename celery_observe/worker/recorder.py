"""Turns the start and the outcome of each task execution into metric updates.

Runs in the worker's main process on the hot path of every task, so each task name's
label children are bound once and reused (``.labels()`` costs a lock and a dict lookup of
a tuple of strings per call).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from ..cardinality import OVERFLOW, BoundedLabel
from ..shapes import STATUSES
from .history import FinishedTask, TaskHistory
from .metrics import TaskMetrics
from .outcome import Outcome


class TaskSeries:
    """The bound label children of one task name.

    ``version`` grows with every change the recorder makes, so the exposition can keep
    this task's rendered lines until the next change.
    """

    __slots__ = ("_metrics", "active", "durations", "errors_by_type", "last_success", "name",
                 "queue_wait_child", "retries_by_reason", "timeouts", "total", "version")

    def __init__(self, metrics: TaskMetrics, name: str) -> None:
        self.name = name
        self.version = 0
        self._metrics = metrics
        # Every status starts at 0 so that rate() sees the first outcome of each.
        self.total: dict[str, Counter] = {s: metrics.task_total.labels(name, s) for s in STATUSES}
        self.active: Gauge = metrics.active_tasks.labels(name)
        self.timeouts: Counter = metrics.task_timeouts.labels(name)
        self.queue_wait_child: Histogram | None = None  # only for tasks with stamped messages
        self.last_success: Gauge | None = None  # absent until the first success
        self.durations: dict[str, Histogram] = {}
        self.errors_by_type: dict[str, Counter] = {}
        self.retries_by_reason: dict[str, Counter] = {}

    def duration(self, status: str) -> Histogram:
        child = self.durations.get(status)
        if child is None:
            child = self.durations[status] = self._metrics.task_duration.labels(self.name, status)
        return child

    def queue_wait(self) -> Histogram:
        if self.queue_wait_child is None:
            self.queue_wait_child = self._metrics.queue_wait.labels(self.name)
        return self.queue_wait_child

    def succeeded_at(self, timestamp: float) -> None:
        if self.last_success is None:
            self.last_success = self._metrics.last_success.labels(self.name)
        self.last_success.set(timestamp)

    def errors(self, error_type: str) -> Counter:
        child = self.errors_by_type.get(error_type)
        if child is None:
            child = self.errors_by_type[error_type] = self._metrics.task_errors.labels(
                self.name, error_type)
        return child

    def retries(self, reason: str) -> Counter:
        child = self.retries_by_reason.get(reason)
        if child is None:
            child = self.retries_by_reason[reason] = self._metrics.task_retries.labels(
                self.name, reason)
        return child


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
        # Class names come from code, but code can make classes, and names x classes can
        # multiply: bound the pairs, as task names are bound.
        self._error_pairs = BoundedLabel("error_type", MAX_ERROR_SERIES)
        self._retry_pairs = BoundedLabel("reason", MAX_ERROR_SERIES)
        self._clock = clock
        self._wall_clock = wall_clock
        self._series: dict[str, TaskSeries] = {}
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(STATUSES, 0)  # for /status: O(1) instead of a collect
        # celery_tasks_total's children by queue: bounded by the queues the worker consumes
        self._by_queue: dict[str, dict[str, Counter]] = {}

    def series(self, task_name: str) -> TaskSeries:
        """The series of ``task_name``, or of ``other`` past the cap on task names."""
        series = self._series.get(task_name)
        if series is None:
            name = self.task_names(task_name)
            with self._lock:
                series = self._series.get(name)
                if series is None:
                    series = self._series[name] = TaskSeries(self.metrics, name)
        return series

    def started(self, task_name: str, published_at: float | None = None) -> None:
        """A task began executing in the pool; ``published_at`` is its producer's stamp."""
        series = self.series(task_name)
        series.active.inc()
        if published_at is not None:
            series.queue_wait().observe(max(0.0, self._wall_clock() - published_at))
        series.version += 1  # after the change: a render that raced it is not kept

    def finished(self, task_name: str, outcome: Outcome, started_at: float | None,
                 task_id: str | None = None, queue: str | None = None) -> None:
        """A task execution ended; ``started_at`` is its monotonic start, None if it never ran.

        ``queue`` is the consumed queue the task was delivered from, ``other`` for a
        delivery that names none (see :mod:`.delivery`), None to count it under no queue.
        """
        series = self.series(task_name)
        try:
            self._finished(series, task_name, outcome, started_at, task_id, queue)
        finally:
            series.version += 1  # after the change: a render that raced it is not kept

    def _queue_total(self, queue: str) -> dict[str, Counter]:
        """The bound children of ``queue``: one dict lookup once made."""
        if queue == OVERFLOW:
            self.metrics.dropped_label_values.labels("queue").inc()
        children = self._by_queue.get(queue)
        if children is None:
            with self._lock:
                children = self._by_queue.get(queue)
                if children is None:
                    children = self._by_queue[queue] = {
                        s: self.metrics.tasks_by_queue.labels(queue, s) for s in STATUSES}
        return children

    def _finished(self, series: TaskSeries, task_name: str, outcome: Outcome,
                  started_at: float | None, task_id: str | None, queue: str | None) -> None:
        elapsed = None if started_at is None else max(0.0, self._clock() - started_at)
        ended = self._wall_clock()
        self.history.append(FinishedTask(
            task_id, task_name, outcome.status, None if elapsed is None else ended - elapsed,
            ended, outcome.error_type))
        if elapsed is not None:
            series.active.dec()
        if outcome.timed_out:
            series.timeouts.inc()
        status = outcome.status
        if status not in series.total:  # ignored: frees the worker, is no outcome
            return
        if series.name != task_name:
            self.metrics.dropped_label_values.labels("task_name").inc()
        series.total[status].inc()
        if queue is not None:
            self._queue_total(queue)[status].inc()
        if status == "success":
            series.succeeded_at(ended)
        with self._lock:
            self._counts[status] += 1
        if elapsed is not None:
            series.duration(status).observe(elapsed)
        if outcome.error_type is not None:
            series.errors(self._bounded(self._error_pairs, series.name,
                                        outcome.error_type)).inc()
            self.metrics.failure_rate.add(series.name)
        if outcome.retry_reason is not None:
            series.retries(self._bounded(self._retry_pairs, series.name,
                                         outcome.retry_reason)).inc()

    def _bounded(self, pairs: BoundedLabel, task_name: str, class_name: str) -> str:
        """``class_name``, or ``other`` once ``pairs`` holds its cap of other pairs."""
        if pairs(f"{task_name}\x1f{class_name}") == OVERFLOW:
            self.metrics.dropped_label_values.labels(pairs.label).inc()
            return OVERFLOW
        return class_name

    def all_series(self) -> list[TaskSeries]:
        """The series of every task name seen, in the order they were first seen."""
        with self._lock:
            return list(self._series.values())

    def counts(self) -> dict[str, int]:
        """Outcomes recorded so far, by status, over all task names."""
        with self._lock:
            return dict(self._counts)
