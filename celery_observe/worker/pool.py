"""The worker's capacity and load: pool size, busy slots, prefetch and reserved tasks.

Read at scrape time from the objects the worker keeps anyway, so they are right after
``--autoscale`` grows or shrinks the pool and cost nothing between scrapes. A request set
that cannot be copied (it changed on every try, or Celery's internals changed) is counted
as a fault in ``celery_observe_internal_errors_total`` and its figures are left out, so a
busy pool is never shown as idle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from celery.worker import state as worker_state
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..faults import FaultLog


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


#: How many times a live request set is copied before the copy is given up.
TRIES = 5
#: The FaultLog component of request sets that could not be copied, outside ``/metrics``.
COMPONENT = "pool introspection"


class PoolIntrospectionError(RuntimeError):
    """One of Celery's live request sets could not be copied: its tasks are unknown."""


def _copy(requests: Iterable[Any]) -> list[Any] | None:
    """A copy of one of Celery's live request sets, which the main loop may change meanwhile;
    None after :data:`TRIES` copies failed ("set changed size during iteration")."""
    for _ in range(TRIES):
        try:
            return list(requests)
        except RuntimeError:
            continue
    return None


def _gave_up(what: str) -> PoolIntrospectionError:
    return PoolIntrospectionError(
        f"celery-observe could not copy Celery's {what}: it changed during each of {TRIES} "
        "copies. Its tasks are left out (not counted as 0) this time.")


def snapshot(requests: Iterable[Any], faults: FaultLog | None = None) -> list[Any]:
    """Copy one of Celery's live request sets; ``[]`` once :data:`TRIES` copies failed,
    reported to ``faults`` (when given) under :data:`COMPONENT`."""
    copied = _copy(requests)
    if copied is None:
        if faults is not None:
            faults.report(COMPONENT, _gave_up("set of requests"))
        return []
    return copied


def _active_and_waiting() -> tuple[list[Any] | None, list[Any] | None]:
    active = _copy(worker_state.active_requests)
    if active is None:
        return None, None  # waiting is reserved minus active: unknown without active
    reserved = _copy(worker_state.reserved_requests)
    if reserved is None:
        return active, None
    ids = {request.id for request in active}
    return active, [r for r in reserved if r.id not in ids]


def active_and_reserved(faults: FaultLog | None = None) -> tuple[list[Any], list[Any]]:
    """Requests executing now, and requests received but waiting for a pool slot.

    A set that could not be copied gives ``[]``, reported to ``faults`` (when given) under
    :data:`COMPONENT`.
    """
    active, waiting = _active_and_waiting()
    if (active is None or waiting is None) and faults is not None:
        faults.report(COMPONENT, _gave_up(
            "active_requests" if active is None else "reserved_requests"))
    return active or [], waiting or []


class PoolCollector(Collector):
    """``celery_worker_pool_{size,busy}``, ``celery_worker_prefetch_count`` and reserved.

    Run it under a :class:`~.guarded_collector.GuardedCollector`: when one of Celery's
    request sets cannot be copied, ``collect()`` leaves out the families that depend on it
    (a busy pool is not shown as idle), yields the others, and then raises
    :class:`PoolIntrospectionError` for the guard to count.
    """

    def __init__(self, worker: Callable[[], Any], consumer: Callable[[], Any]) -> None:
        self._worker = worker
        self._consumer = consumer

    def collect(self) -> Iterable[Metric]:
        worker = self._worker()
        if worker is None:
            return
        name = [str(worker.hostname)]
        active, waiting = _active_and_waiting()
        size = pool_size(getattr(worker, "pool", None))
        qos = getattr(self._consumer(), "qos", None)
        for metric, help_text, value in (
            ("celery_worker_pool_size", "Processes or threads of the pool.", size),
            ("celery_worker_pool_busy", "Pool slots executing a task now.",
             None if active is None else len(active)),
            ("celery_worker_prefetch_count", "Messages the worker may hold unacknowledged "
             "(the consumer's QoS prefetch count).", getattr(qos, "value", None)),
            ("celery_worker_reserved_tasks", "Tasks received and waiting for a pool slot.",
             None if waiting is None else len(waiting)),
        ):
            if value is not None:
                family = GaugeMetricFamily(metric, help_text, labels=["worker_name"])
                family.add_metric(name, float(value))
                yield family
        if active is None or waiting is None:
            raise _gave_up("active_requests" if active is None else "reserved_requests")
