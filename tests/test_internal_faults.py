"""Faults celery-observe used to swallow silently are counted in internal_errors_total."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from celery import Celery
from celery.concurrency.prefork import TaskPool
from celery.worker import state as worker_state
from prometheus_client import CollectorRegistry, Counter

from celery_observe.faults import FaultLog
from celery_observe.worker.guarded_collector import GuardedCollector
from celery_observe.worker.pool import PoolCollector, active_and_reserved, snapshot
from celery_observe.worker.resources import ResourceMonitor, pool_child_pids

FAULTS = "celery_observe_internal_errors_total"


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry per test."""
    return CollectorRegistry()


@pytest.fixture
def faults(registry: CollectorRegistry) -> FaultLog:
    """A FaultLog counting into ``registry``, as the worker's does."""
    return FaultLog(Counter(FAULTS, "faults", ["component"], registry=registry))


def faults_of(registry: CollectorRegistry, component: str) -> float | None:
    return registry.get_sample_value(FAULTS, {"component": component})


@pytest.fixture
def prefork_pool() -> Iterator[TaskPool]:
    """A started prefork pool of two children; terminated afterwards."""
    app = Celery("internal-faults", set_as_current=False)
    pool = TaskPool(2, app=app, initargs=(app, "internal-faults@localhost"))
    pool.start()
    try:
        yield pool
    finally:
        with contextlib.suppress(Exception):
            pool.terminate()
        app.close()


# --- resources: the children of the pool --------------------------------------------


def test_child_psutil_denies_is_a_fault_and_the_other_child_stays(
        registry: CollectorRegistry, faults: FaultLog, prefork_pool: TaskPool) -> None:
    """A child psutil may not read is counted once per sample and left out, the rest kept."""
    denied, readable = pool_child_pids(prefork_pool)

    class Process:
        """A real psutil.Process, denied reading the memory of one child."""

        def __init__(self, pid: int) -> None:
            self._real = psutil.Process(pid)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def memory_info(self) -> Any:
            if self._real.pid == denied:
                raise psutil.AccessDenied(denied)
            return self._real.memory_info()

    fake = types.SimpleNamespace(Process=Process, NoSuchProcess=psutil.NoSuchProcess,
                                 ZombieProcess=psutil.ZombieProcess,
                                 AccessDenied=psutil.AccessDenied)
    monitor = ResourceMonitor(lambda: pool_child_pids(prefork_pool), faults,
                              psutil_module=fake)
    registry.register(monitor)
    monitor.sample()
    monitor.sample()
    assert faults_of(registry, "resources") == 2
    assert registry.get_sample_value("celery_process_threads", {"process": str(denied)}) is None
    assert registry.get_sample_value("celery_process_threads",
                                     {"process": str(readable)}) is not None
    assert registry.get_sample_value("celery_process_threads", {"process": "main"}) is not None
    assert registry.get_sample_value("celery_worker_pool_processes") == 1


def test_running_prefork_pool_without_its_process_list_is_a_fault(
        registry: CollectorRegistry, faults: FaultLog, prefork_pool: TaskPool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A started prefork pool whose children are not where billiard kept them is a fault."""
    monkeypatch.setattr(prefork_pool._pool, "_pool", tuple(prefork_pool._pool._pool))
    monitor = ResourceMonitor(lambda: pool_child_pids(prefork_pool), faults)
    registry.register(monitor)
    monitor.sample()
    assert faults_of(registry, "resources") == 1
    assert registry.get_sample_value("celery_worker_pool_processes") is None  # not "0"


def test_prefork_pool_not_started_or_stopped_has_no_children_and_no_fault(
        registry: CollectorRegistry, faults: FaultLog) -> None:
    """Before start and after stop a prefork pool has no children, which is no fault."""
    app = Celery("internal-faults", set_as_current=False)
    pool = TaskPool(1, app=app, initargs=(app, "internal-faults@localhost"))
    monitor = ResourceMonitor(lambda: pool_child_pids(pool), faults)
    registry.register(monitor)
    try:
        monitor.sample()
        pool.start()
        pool.stop()
        monitor.sample()
    finally:
        with contextlib.suppress(Exception):
            pool.terminate()
        app.close()
    assert faults_of(registry, "resources") is None
    assert registry.get_sample_value("celery_worker_pool_processes") == 0


# --- pool: Celery's live request sets -------------------------------------------------


class ChurningSet(set[Any]):
    """A set that grows while it is copied, every time: the main loop at its busiest."""

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            self.add(object())  # the set iterator's next step raises RuntimeError
            yield item


def _scrape_pool(faults: FaultLog) -> dict[str, float]:
    """One scrape of a PoolCollector guarded as the worker guards it: value by metric name."""
    worker = types.SimpleNamespace(hostname="w@localhost",
                                   pool=types.SimpleNamespace(num_processes=2))
    consumer = types.SimpleNamespace(qos=types.SimpleNamespace(value=4))
    guarded = GuardedCollector("pool metrics", PoolCollector(lambda: worker, lambda: consumer),
                               faults)
    return {sample.name: sample.value for family in guarded.collect()
            for sample in family.samples}


def test_pool_collector_counts_active_requests_it_cannot_copy(
        registry: CollectorRegistry, faults: FaultLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Busy and reserved are left out, not 0, the rest is served and the guard counts it."""
    monkeypatch.setattr(worker_state, "active_requests", ChurningSet({"request"}))
    assert _scrape_pool(faults) == {"celery_worker_pool_size": 2,
                                    "celery_worker_prefetch_count": 4}
    assert faults_of(registry, "pool metrics") == 1


def test_pool_collector_counts_reserved_requests_it_cannot_copy(
        registry: CollectorRegistry, faults: FaultLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reserved set that cannot be copied costs only the reserved count, and is counted."""
    monkeypatch.setattr(worker_state, "active_requests", set())
    monkeypatch.setattr(worker_state, "reserved_requests", ChurningSet({"request"}))
    assert _scrape_pool(faults) == {"celery_worker_pool_size": 2,
                                    "celery_worker_prefetch_count": 4,
                                    "celery_worker_pool_busy": 0}
    assert faults_of(registry, "pool metrics") == 1


def test_snapshot_reports_a_set_it_cannot_copy(registry: CollectorRegistry,
                                               faults: FaultLog) -> None:
    """snapshot() still gives [] after five tries, and reports it to the FaultLog it is given."""
    assert snapshot(ChurningSet({"request"}), faults) == []
    assert faults_of(registry, "pool introspection") == 1


def test_active_and_reserved_report_a_set_they_cannot_copy(
        registry: CollectorRegistry, faults: FaultLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """active_and_reserved() gives [] for the set it cannot copy and reports it once."""
    monkeypatch.setattr(worker_state, "active_requests", ChurningSet({"request"}))
    assert active_and_reserved(faults) == ([], [])
    assert faults_of(registry, "pool introspection") == 1


def test_request_sets_that_copy_are_no_fault(registry: CollectorRegistry,
                                             faults: FaultLog) -> None:
    """A set that copies gives its requests and reports nothing."""
    assert snapshot({"request"}, faults) == ["request"]
    assert faults_of(registry, "pool introspection") is None
