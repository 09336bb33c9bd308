"""Every Prometheus metric a worker exports, defined on a registry the caller owns.

Names and labels follow the metrics guide (``../shared/seeds/metrics-guide.md``) so that
dashboards and alert rules written for it work unchanged.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client import metrics as client_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from ..config import DEFAULT_BUCKETS
from ..shapes import STATUSES
from .task_series import Blocks, Layout

#: Time between publish and start: the default duration buckets, from a blink (5 ms) to a
#: two-hour backlog, so waits and durations compare bucket by bucket.
WAIT_BUCKETS: tuple[float, ...] = DEFAULT_BUCKETS


class FailureRate(Collector):
    """``celery_task_failure_rate``: failures per minute over the last 60 seconds.

    Each task name has one array of 16-bit counts: the failures of each of the last 60
    seconds (slot ``second % 60``; a count stops at 65,535 a second), then the last second
    written (two slots); slots older than that are cleared on the next write. Memory per
    task is fixed (124 bytes of counts) and recording a failure is O(1); the sum is taken
    only when Prometheus scrapes.
    """

    WINDOW = 60
    _MAX = 0xFFFF
    DOCUMENTATION = "Task failures per minute over a rolling 1-minute window."

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[str, array[int]] = {}

    @classmethod
    def _last(cls, slots: array[int]) -> int:
        return slots[cls.WINDOW] | slots[cls.WINDOW + 1] << 16

    def add(self, task_name: str) -> None:
        second = int(self._clock())
        window = self.WINDOW
        with self._lock:
            slots = self._slots.get(task_name)
            if slots is None:
                slots = self._slots[task_name] = array("H", [0]) * (window + 2)
                last = -window  # every slot is stale
            else:
                last = self._last(slots)
            if second > last:
                for stale in range(max(last + 1, second - window + 1), second + 1):
                    slots[stale % window] = 0
                slots[window], slots[window + 1] = second & self._MAX, second >> 16 & self._MAX
                last = second
            slot = last % window  # a clock that went back counts in the latest second
            if slots[slot] < self._MAX:
                slots[slot] += 1

    def per_minute(self, task_name: str) -> float:
        """Failures of ``task_name`` seen in the last 60 s (0 for an unknown name)."""
        with self._lock:
            slots = self._slots.get(task_name)
            return 0.0 if slots is None else self._sum(slots, int(self._clock()))

    def _sum(self, slots: array[int], now: int) -> float:
        """The slots of the seconds after ``now - WINDOW``: those up to the last written."""
        window = self.WINDOW
        last = self._last(slots)
        valid = min(window, window - (now - last))  # how many seconds up to ``last``
        if valid <= 0:
            return 0.0
        end = last % window + 1
        start = end - valid
        if start >= 0:
            return float(sum(slots[start:end]))
        return float(sum(slots[start % window:window]) + sum(slots[:end]))

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("celery_task_failure_rate", self.DOCUMENTATION,
                                   labels=["task_name"])
        # As add_metric would, without its per-sample zip and dict(): 1 ms at 500 names
        family.samples = [Sample(family.name, {"task_name": name}, rate)
                          for name, rate in self.rates()]
        yield family

    def rates(self) -> list[tuple[str, float]]:
        """Each task name that ever failed, with its failures in the last 60 s."""
        now = int(self._clock())
        with self._lock:
            return [(name, self._sum(slots, now)) for name, slots in self._slots.items()]


class OutcomeTotals(Collector):
    """Outcomes by status (for ``/status``), and ``celery_tasks_total{queue,status}``.

    Both change under one lock, once per outcome: a prometheus_client counter child
    would take a lock of its own and four Python calls more. The page is what such a
    counter writes: a queue's five status series appear together at its first outcome,
    stamped ``_created`` then. Queues are bounded by those the worker consumes, plus
    ``other`` (see :mod:`.delivery`).
    """

    DOCUMENTATION = ("Tasks finished by this worker, by the queue they were delivered from "
                     "and outcome; 'other' for a delivery that names no queue the worker "
                     "consumes.")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_status = dict.fromkeys(STATUSES, 0)
        self._by_queue: dict[str, dict[str, float]] = {}
        self._created: dict[str, float] = {}

    def add(self, status: str, queue: str | None, now: float) -> None:
        """One outcome, counted under ``queue`` too unless it is None."""
        with self._lock:
            self._by_status[status] += 1
            if queue is not None:
                counts = self._by_queue.get(queue)
                if counts is None:
                    counts = self._by_queue[queue] = dict.fromkeys(STATUSES, 0.0)
                    self._created[queue] = now
                counts[status] += 1.0

    def by_status(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_status)

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily("celery_tasks", self.DOCUMENTATION,
                                     labels=["queue", "status"])
        created = client_metrics._use_created  # prometheus_client's switch for _created
        with self._lock:
            queues = [(queue, dict(counts), self._created[queue])
                      for queue, counts in self._by_queue.items()]
        for queue, counts, stamp in queues:
            for status, value in counts.items():
                family.add_metric([queue, status], value, created=stamp if created else None)
        yield family


class PerTaskFamily(NamedTuple):
    """A family with a ``task_name`` label, rendered by :mod:`.exposition` from the
    recorder's :class:`~.task_series.TaskSeries`, not kept in a registry."""

    name: str  # as prometheus_client names the family: a counter's without ``_total``
    documentation: str
    kind: str  # counter, gauge or histogram


class TaskMetrics:
    """The task and worker metric families of one observed worker.

    The per-task families (``per_task``) are not in ``registry``: the recorder keeps their
    values compact, and :mod:`.exposition` renders them, caching each task's lines.
    """

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self.registry = registry
        self.duration_layout = Layout(buckets)
        self.wait_layout = Layout(WAIT_BUCKETS)
        self.blocks = Blocks(self.duration_layout, self.wait_layout)
        self.task_total = PerTaskFamily(
            "celery_task", "Tasks finished by this worker, by outcome.", "counter")
        self.task_duration = PerTaskFamily(
            "celery_task_duration_seconds",
            "Time from the start of a task's execution to its outcome.", "histogram")
        self.active_tasks = PerTaskFamily("celery_active_tasks", "Tasks executing now.", "gauge")
        self.task_errors = PerTaskFamily(
            "celery_task_errors", "Failed tasks by exception class.", "counter")
        self.task_retries = PerTaskFamily(
            "celery_task_retries", "Task retries by the exception class that caused them.",
            "counter")
        self.task_timeouts = PerTaskFamily(
            "celery_task_timeouts", "Tasks that exceeded their soft or hard time limit.",
            "counter")
        self.last_success = PerTaskFamily(
            "celery_task_last_success_timestamp_seconds",
            "Unix time of the task's last success on this worker; absent before the first "
            "(for dead-man's switch alerts on periodic tasks).", "gauge")
        self.queue_wait = PerTaskFamily(
            "celery_task_queue_wait_seconds",
            "Time from publish to start, for tasks whose producer stamped the publish time "
            "(celery_observe installed in the producer).", "histogram")
        self.outcomes = OutcomeTotals()
        registry.register(self.outcomes)
        self.failure_rate = FailureRate()  # registered by the caller, behind a fault guard
        self.worker_info = Gauge(
            "celery_worker_info",
            "Always 1; labels describe the worker.",
            ["worker_name", "celery_version", "pool", "concurrency"],
            registry=registry,
        )
        self.dropped_label_values = Counter(
            "celery_observe_dropped_label_values_total",
            "Times a label value was replaced by 'other' (over the cap, or not allowed).",
            ["label"],
            registry=registry,
        )
        self.internal_errors = Counter(
            "celery_observe_internal_errors_total",
            "Faults inside celery-observe itself, swallowed so the worker lives on.",
            ["component"],
            registry=registry,
        )
        self.per_task: tuple[PerTaskFamily, ...] = (
            self.task_total, self.task_duration, self.active_tasks, self.task_errors,
            self.task_retries, self.task_timeouts, self.queue_wait, self.last_success)
