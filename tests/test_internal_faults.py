"""Faults celery-observe used to swallow silently are counted in internal_errors_total."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
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
from celery_observe.task_side import metrics as task_side
from celery_observe.task_side.monitored import COMPONENT, LabelExtractionError, _Extractor
from celery_observe.testing import Metrics, ObservedWorker, wait_until
from celery_observe.worker.guarded_collector import GuardedCollector
from celery_observe.worker.pool import PoolCollector, active_and_reserved, snapshot
from celery_observe.worker.resources import ResourceMonitor, pool_child_pids
from celery_observe.worker.task_metrics_receiver import TaskMetricsReceiver

from .psutil_doubles import psutil_failing_for
from .workers import WorkerProcess

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

    fake = psutil_failing_for(denied, psutil.AccessDenied)
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
    """Before start and after terminate a prefork pool has no children, which is no fault."""
    app = Celery("internal-faults", set_as_current=False)
    pool = TaskPool(1, app=app, initargs=(app, "internal-faults@localhost"))
    monitor = ResourceMonitor(lambda: pool_child_pids(pool), faults)
    registry.register(monitor)
    try:
        monitor.sample()
        pool.start()
        pool.terminate()  # not stop(): it waits for the child, which may never get going
        monitor.sample()
    finally:
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


# --- monitored tasks: labels that cannot be extracted ---------------------------------


class Reports:
    """A stand-in for the task-side report path: records (component, exception)."""

    def __init__(self) -> None:
        self.faults: list[tuple[str, BaseException]] = []

    def __call__(self, component: str, exc: BaseException) -> None:
        self.faults.append((component, exc))


def _extractor(fun: Any, labels: dict[str, Any], reports: Reports) -> _Extractor:
    return _Extractor(fun, labels, "proj.task", report=reports)


def _refund(amount: int, customer_id: str = "walk-in", **details: Any) -> int:
    return amount


@pytest.mark.parametrize(("args", "kwargs", "expected"), [
    ((5, "c1"), {}, ("c1", "")),
    ((5,), {"customer_id": "c2"}, ("c2", "")),
    ((5,), {}, ("walk-in", "")),
    ((5,), {"region": "eu"}, ("walk-in", "eu")),
])
def test_labels_from_arguments_defaults_and_extra_keywords(
        args: tuple[Any, ...], kwargs: dict[str, Any], expected: tuple[str, ...]) -> None:
    """Positional, keyword, default and **kwargs values are found; only absent ones fault."""
    reports = Reports()
    extractor = _extractor(_refund, {"customer_id": "customer_id", "region": "region"}, reports)
    assert extractor.values(args, kwargs) == expected
    assert len(reports.faults) == (0 if "region" in kwargs else 1)


def test_missing_argument_is_reported_naming_label_task_and_argument() -> None:
    """A label naming an argument the call lacks is '' and one fault that says which."""
    reports = Reports()
    extractor = _extractor(_refund, {"shop": "shop_id"}, reports)
    assert extractor.values((5,), {}) == ("",)
    [(component, error)] = reports.faults
    assert component == COMPONENT == "monitored task labels"
    assert isinstance(error, LabelExtractionError)
    assert str(error) == ("label 'shop' of monitored task 'proj.task' is the argument "
                          "'shop_id', which this call did not pass")


def test_raising_label_function_is_reported_with_its_exception_as_the_cause() -> None:
    """A label function that raises gives '' and one fault whose cause is its exception."""
    reports = Reports()
    extractor = _extractor(_refund, {"region": lambda args, kwargs: kwargs["address"]},
                           reports)
    assert extractor.values((5,), {}) == ("",)
    [(_, error)] = reports.faults
    assert str(error) == "label 'region' of monitored task 'proj.task' could not be computed: " \
                         "KeyError"
    assert isinstance(error.__cause__, KeyError)


def test_label_value_that_cannot_be_shown_is_reported() -> None:
    """A value whose str() raises gives '' and one fault."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    reports = Reports()
    extractor = _extractor(_refund, {"customer_id": "customer_id"}, reports)
    assert extractor.values((5, Unprintable()), {}) == ("",)
    assert len(reports.faults) == 1


def test_receiver_counts_a_fault_sent_by_task_code(registry: CollectorRegistry,
                                                   faults: FaultLog) -> None:
    """report_fault in the worker's process reaches its FaultLog, counted per fault."""
    receiver = TaskMetricsReceiver(CollectorRegistry(), faults)
    receiver.start()
    try:
        for _ in range(3):
            task_side.report_fault("monitored task labels", KeyError("order"))
    finally:
        receiver.stop()
    task_side.report_fault("monitored task labels", KeyError("order"))  # stopped: dropped
    assert faults_of(registry, "monitored task labels") == 3


def test_a_long_traceback_still_fits_one_pipe_write(registry: CollectorRegistry,
                                                    faults: FaultLog) -> None:
    """A fault with a huge message is cut to fit an atomic write and still counted."""
    receiver = TaskMetricsReceiver(CollectorRegistry(), faults)
    read_fd, write_fd = os.pipe()
    try:
        task_side.set_sink(task_side.PipeWriter(write_fd))
        task_side.report_fault("monitored task labels", ValueError("é" * 100_000))
        task_side.set_sink(None)
        data = os.read(read_fd, 65536)
    finally:
        task_side.set_sink(None)
        os.close(read_fd)
        os.close(write_fd)
    (size,) = task_side.FRAME.unpack_from(data)
    assert len(data) == task_side.FRAME.size + size <= task_side.FRAME.size + task_side.MAX_MESSAGE
    receiver.apply(pickle.loads(data[task_side.FRAME.size:]))
    assert faults_of(registry, "monitored task labels") == 1


A = "tests.faultingmonitoredapp."


def outcomes(worker: ObservedWorker) -> int:
    counts: dict[str, int] = json.loads(worker.get("/status")[2])["counts"]
    return sum(counts.values())


def label_faults(worker: ObservedWorker, expected: int) -> Metrics | None:
    """The worker's samples once it counts ``expected`` label faults, else None."""
    samples = worker.metrics()
    return samples if samples.value(FAULTS, component=COMPONENT) == expected else None


@pytest.mark.broker
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_label_faults_reach_the_worker_counter_from_pool_children(
        pool: str, broker: str, client: Celery, queue_name: str) -> None:
    """Each label that cannot be extracted, in a pool child too, is one fault of the worker."""
    with WorkerProcess(broker, queue_name, pool=pool, app="tests.faultingmonitoredapp") as worker:
        for kwargs in ({}, {"customer_id": "c1"}, {}, {}):
            client.send_task(A + "refund", (5,), kwargs, queue=queue_name)
        client.send_task(A + "deliver", ({"region": "eu"},), queue=queue_name)  # KeyError
        client.send_task(A + "deliver", kwargs={"address": {"region": "us"}}, queue=queue_name)
        wait_until(lambda: outcomes(worker) == 6, 30, "6 outcomes")
        samples = wait_until(lambda: label_faults(worker, 4), 10, "4 label faults")
        assert samples is not None
        log = worker.log()
    refund, deliver = {"task_name": A + "refund"}, {"task_name": A + "deliver"}
    assert samples.value("faulting_refund_completed_total", **refund, customer_id="") == 3
    assert samples.value("faulting_refund_completed_total", **refund, customer_id="c1") == 1
    assert samples.value("faulting_deliver_completed_total", **deliver, region="") == 1
    assert samples.value("faulting_deliver_completed_total", **deliver, region="us") == 1
    assert samples.value("celery_task_total", **refund, status="success") == 4
    assert log.count("celery-observe: monitored task labels failed and was skipped") == 1
    assert "which this call did not pass" in log or "could not be computed: KeyError" in log
