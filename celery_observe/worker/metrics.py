"""Every Prometheus metric a worker exports, defined on a registry the caller owns.

Names and labels follow the metrics guide (``../shared/seeds/metrics-guide.md``) so that
dashboards and alert rules written for it work unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

#: Time between publish and start: from a blink to an hour-long backlog.
WAIT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600,
)


class FailureRate(Collector):
    """``celery_task_failure_rate``: failures per minute over the last 60 seconds.

    Counts live in 60 one-second slots per task name, so memory per task is fixed and
    recording a failure is O(1); the sum is taken only when Prometheus scrapes.
    """

    WINDOW = 60

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[str, list[list[int]]] = {}  # name -> [[second, count] x WINDOW]

    def add(self, task_name: str) -> None:
        second = int(self._clock())
        with self._lock:
            slots = self._slots.get(task_name)
            if slots is None:
                slots = self._slots[task_name] = [[-1, 0] for _ in range(self.WINDOW)]
            slot = slots[second % self.WINDOW]
            if slot[0] != second:
                slot[0], slot[1] = second, 0
            slot[1] += 1

    def per_minute(self, task_name: str) -> float:
        """Failures of ``task_name`` seen in the last 60 s (0 for an unknown name)."""
        oldest = int(self._clock()) - self.WINDOW
        with self._lock:
            slots = self._slots.get(task_name, ())
            return float(sum(count for second, count in slots if second > oldest))

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "celery_task_failure_rate",
            "Task failures per minute over a rolling 1-minute window.",
            labels=["task_name"],
        )
        with self._lock:
            names = list(self._slots)
        for name in names:
            family.add_metric([name], self.per_minute(name))
        yield family


class TaskMetrics:
    """The task and worker metric families of one observed worker.

    The per-task families are not in ``registry``: :mod:`celery_observe.exposition`
    renders them, caching each task's lines (see ``per_task``).
    """

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self.registry = registry
        self.task_total = Counter(
            "celery_task_total",
            "Tasks finished by this worker, by outcome.",
            ["task_name", "status"],
            registry=None,
        )
        self.task_duration = Histogram(
            "celery_task_duration_seconds",
            "Time from the start of a task's execution to its outcome.",
            ["task_name", "status"],
            buckets=buckets,
            registry=None,
        )
        self.active_tasks = Gauge(
            "celery_active_tasks",
            "Tasks executing now.",
            ["task_name"],
            registry=None,
        )
        self.task_errors = Counter(
            "celery_task_errors_total",
            "Failed tasks by exception class.",
            ["task_name", "error_type"],
            registry=None,
        )
        self.task_retries = Counter(
            "celery_task_retries_total",
            "Task retries by the exception class that caused them.",
            ["task_name", "reason"],
            registry=None,
        )
        self.task_timeouts = Counter(
            "celery_task_timeouts_total",
            "Tasks that exceeded their soft or hard time limit.",
            ["task_name"],
            registry=None,
        )
        self.last_success = Gauge(
            "celery_task_last_success_timestamp_seconds",
            "Unix time of the task's last success on this worker; absent before the first "
            "(for dead-man's switch alerts on periodic tasks).",
            ["task_name"],
            registry=None,
        )
        self.tasks_by_queue = Counter(
            "celery_tasks",
            "Tasks finished by this worker, by the queue they were delivered from and "
            "outcome; 'other' for a delivery that names no queue the worker consumes.",
            ["queue", "status"],
            registry=registry,
        )
        self.failure_rate = FailureRate()  # registered by the caller, behind a fault guard
        self.worker_info = Gauge(
            "celery_worker_info",
            "Always 1; labels describe the worker.",
            ["worker_name", "celery_version", "pool", "concurrency"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "celery_task_queue_wait_seconds",
            "Time from publish to start, for tasks whose producer stamped the publish time "
            "(celery_observe installed in the producer).",
            ["task_name"],
            buckets=WAIT_BUCKETS,
            registry=None,
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
        self.per_task: tuple[MetricWrapperBase, ...] = (
            self.task_total, self.task_duration, self.active_tasks, self.task_errors,
            self.task_retries, self.task_timeouts, self.queue_wait, self.last_success)
