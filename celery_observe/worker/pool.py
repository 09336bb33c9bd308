"""The worker's capacity and load: pool size, busy slots, prefetch and reserved tasks.

Read at scrape time from the objects the worker keeps anyway, so they are right after
``--autoscale`` grows or shrinks the pool and cost nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from celery.worker import state as worker_state
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


def pool_size(pool: Any) -> int | None:
    """Processes or threads the pool runs tasks in now (the solo pool: 1)."""
    for attribute in ("num_processes", "limit"):
        try:
            value = getattr(pool, attribute, None)
        except Exception:  # noqa: BLE001 - a pool that is not started yet
            value = None
        if isinstance(value, int):
            return value
    return None


def snapshot(requests: Iterable[Any]) -> list[Any]:
    """Copy one of Celery's live request sets, which the main loop may change meanwhile."""
    for _ in range(5):
        try:
            return list(requests)
        except RuntimeError:  # "set changed size during iteration"
            continue
    return []


def active_and_reserved() -> tuple[list[Any], list[Any]]:
    """Requests executing now, and requests received but waiting for a pool slot."""
    active = snapshot(worker_state.active_requests)
    ids = {request.id for request in active}
    waiting = [r for r in snapshot(worker_state.reserved_requests) if r.id not in ids]
    return active, waiting


class PoolCollector(Collector):
    """``celery_worker_pool_{size,busy}``, ``celery_worker_prefetch_count`` and reserved."""

    def __init__(self, worker: Callable[[], Any], consumer: Callable[[], Any]) -> None:
        self._worker = worker
        self._consumer = consumer

    def collect(self) -> Iterable[Metric]:
        worker = self._worker()
        if worker is None:
            return
        name = [str(worker.hostname)]
        active, reserved = (len(requests) for requests in active_and_reserved())
        size = pool_size(getattr(worker, "pool", None))
        qos = getattr(self._consumer(), "qos", None)
        for metric, help_text, value in (
            ("celery_worker_pool_size", "Processes or threads of the pool.", size),
            ("celery_worker_pool_busy", "Pool slots executing a task now.", active),
            ("celery_worker_prefetch_count", "Messages the worker may hold unacknowledged "
             "(the consumer's QoS prefetch count).", getattr(qos, "value", None)),
            ("celery_worker_reserved_tasks", "Tasks received and waiting for a pool slot.",
             reserved),
        ):
            if value is not None:
                family = GaugeMetricFamily(metric, help_text, labels=["worker_name"])
                family.add_metric(name, float(value))
                yield family
