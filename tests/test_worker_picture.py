"""The rest of the worker's picture: pool, queues, wait time, resources, task metrics, caps."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psutil
import pytest
from celery import Celery

from celery_observe import stamp_publish_times
from celery_observe.cardinality import BoundedLabel
from celery_observe.testing import wait_until

from .workers import WorkerProcess

pytestmark = pytest.mark.broker
M = "tests.metricsapp."


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def outcomes(worker: WorkerProcess) -> int:
    return sum(json.loads(worker.get("/status")[2])["counts"].values())


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_task_metrics_from_recycled_children_add_up_exactly(
        pool: str, broker: str, client: Celery, queue_name: str) -> None:
    """Counters, histograms and gauges recorded in tasks reach /metrics exactly, even when
    every prefork child is replaced after one task."""
    extra = ("--max-tasks-per-child", "1") if pool == "prefork" else ()
    with WorkerProcess(broker, queue_name, pool=pool, concurrency=2, extra_args=extra,
                       app="tests.metricsapp") as worker:
        counts = [3, 5, 7, 11, 13, 17]
        for count in counts:
            client.send_task(M + "record_items", ("widget", count), queue=queue_name)
        client.send_task(M + "record_items", ("gadget", 1), queue=queue_name)
        wait_until(lambda: outcomes(worker) == len(counts) + 1, 60, "all tasks")
        expected = sum(counts)
        samples = wait_until(
            lambda: (s := worker.metrics()) and value(
                s, "test_items_processed_total", kind="widget") == expected and s,
            10, f"{expected} widgets")
    assert value(samples, "test_items_processed_total", kind="gadget") == 1
    assert value(samples, "test_batch_size_count") == len(counts) + 1
    assert value(samples, "test_batch_size_sum") == expected + 1
    assert value(samples, "test_batch_size_bucket", le="10.0") == 4  # 1, 3, 5, 7
    assert value(samples, "test_last_batch_size") in set(counts) | {1}


def test_monitored_task_counts_by_customer(broker: str, client: Celery, queue_name: str) -> None:
    """MonitoredTask and @monitor_task record started/completed/failed/duration by customer."""
    with WorkerProcess(broker, queue_name, pool="prefork", app="tests.metricsapp") as worker:
        for customer, amount in (("c1", 5), ("c1", 7), ("c2", -1), ("c2", 3)):
            client.send_task(M + "bill", (customer, amount), queue=queue_name)
        client.send_task(M + "ship", kwargs={"order": {"customer": "c3"}}, queue=queue_name)
        wait_until(lambda: outcomes(worker) == 5, 30, "5 outcomes")
        samples = wait_until(lambda: (s := worker.metrics()) and value(
            s, "celery_monitored_task_duration_seconds_count", task_name=M + "bill",
            customer_id="c2") == 2 and s, 10, "monitored metrics")
    for customer, started, completed in (("c1", 2, 2), ("c2", 2, 1)):
        labels = {"task_name": M + "bill", "customer_id": customer}
        assert value(samples, "celery_monitored_task_started_total", **labels) == started
        assert value(samples, "celery_monitored_task_completed_total", **labels) == completed
    assert value(samples, "celery_monitored_task_failed_total", task_name=M + "bill",
                 customer_id="c2", error_type="ValueError") == 1
    assert value(samples, "celery_monitored_task_completed_total", task_name=M + "ship",
                 customer_id="c3") == 1


@pytest.mark.parametrize(("pool", "concurrency", "size"),
                         [("prefork", 2, 2), ("threads", 4, 4), ("solo", 3, 1)])
def test_pool_size_busy_and_prefetch(pool: str, concurrency: int, size: int, broker: str,
                                     client: Celery, queue_name: str) -> None:
    """Pool size, busy slots and the prefetch count match the worker's real pool."""
    with WorkerProcess(broker, queue_name, pool=pool, concurrency=concurrency) as worker:
        task_id = str(uuid.uuid4())
        # Long enough to scrape; only prefork can cut it short, the others finish it on stop.
        seconds = 30 if pool == "prefork" else 3
        client.send_task("tests.workerapp.sleep", (seconds,), queue=queue_name, task_id=task_id)
        host = {"worker_name": worker.hostname}
        samples = wait_until(lambda: (s := worker.metrics()) and value(
            s, "celery_worker_pool_busy", **host) == 1 and s, 15, "one busy slot")
        assert value(samples, "celery_worker_pool_size", **host) == size
        assert value(samples, "celery_worker_prefetch_count", **host) == concurrency if \
            pool != "solo" else value(samples, "celery_worker_prefetch_count", **host) >= 1
        client.control.revoke(task_id, terminate=pool == "prefork")
        if pool == "prefork":  # the terminated child is replaced: the pool is whole again
            main = psutil.Process(worker.process.pid)  # type: ignore[union-attr]
            wait_until(lambda: len(main.children()) == size, 15, f"{size} pool children")


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_queue_length_counts_every_priority(broker: str, client: Celery,
                                           queue_name: str) -> None:
    """celery_queue_length sums the waiting messages over all Redis priority sub-queues."""
    with WorkerProcess(broker, queue_name, pool="prefork", concurrency=1) as worker:
        blocker = str(uuid.uuid4())
        client.send_task("tests.workerapp.sleep", (30,), queue=queue_name, task_id=blocker)
        wait_until(lambda: value(worker.metrics(), "celery_worker_pool_busy",
                                 worker_name=worker.hostname) == 1, 15, "the blocker to run")
        for priority in range(10):
            client.send_task("tests.workerapp.add", (1, priority), queue=queue_name,
                             priority=priority)
        host = {"worker_name": worker.hostname}

        def waiting_plus_reserved(samples: dict[Any, float]) -> float:
            return (value(samples, "celery_queue_length", queue_name=queue_name) or 0) + \
                (value(samples, "celery_worker_reserved_tasks", **host) or 0)

        samples = wait_until(lambda: (s := worker.metrics()) and waiting_plus_reserved(s) == 10
                             and s, 15, "10 messages waiting or reserved")
        by_priority = {labels: v for (name, labels), v in samples.items()
                       if name == "celery_queue_length_by_priority"}
        assert sum(by_priority.values()) == value(samples, "celery_queue_length",
                                                  queue_name=queue_name)
        client.control.revoke(blocker, terminate=True)


def test_queue_wait_is_measured_for_stamped_messages_only(
        broker: str, client: Celery, queue_name: str) -> None:
    """Only messages whose producer stamped a publish time feed the wait histogram."""
    with WorkerProcess(broker, queue_name, pool="threads") as worker:
        for n in range(2):
            client.send_task("tests.workerapp.add", (n, 0), queue=queue_name)
        wait_until(lambda: outcomes(worker) == 2, 20, "2 unstamped tasks")
        stamp_publish_times()
        for n in range(3):
            client.send_task("tests.workerapp.add", (n, 1), queue=queue_name)
        wait_until(lambda: outcomes(worker) == 5, 20, "3 stamped tasks")
        samples = worker.metrics()
    assert value(samples, "celery_task_queue_wait_seconds_count",
                 task_name="tests.workerapp.add") == 3


def test_resource_gauges_follow_recycled_children(broker: str, client: Celery,
                                                 queue_name: str) -> None:
    """Main and every child have resource series; a recycled child's series disappear."""
    with WorkerProcess(broker, queue_name, pool="prefork", concurrency=1,
                       extra_args=("--max-tasks-per-child", "1",
                                   "--observe-resource-interval", "0.2")) as worker:
        main = psutil.Process(worker.process.pid)  # type: ignore[union-attr]

        def processes() -> set[str]:
            return {dict(labels)["process"] for (name, labels) in worker.metrics()
                    if name == "celery_process_resident_memory_bytes"}

        first_child = str(main.children()[0].pid)
        wait_until(lambda: processes() == {"main", first_child}, 10, "main and child series")
        client.send_task("tests.workerapp.add", (1, 1), queue=queue_name)
        wait_until(lambda: first_child not in processes() and len(processes()) == 2, 20,
                   "the recycled child's series to be replaced")


def test_task_name_cap_maps_the_rest_to_other(broker: str, client: Celery,
                                              queue_name: str) -> None:
    """Past --observe-max-task-names, outcomes count under task_name='other'."""
    with WorkerProcess(broker, queue_name, pool="threads",
                       extra_args=("--observe-max-task-names", "1")) as worker:
        client.send_task("tests.workerapp.add", (1, 1), queue=queue_name)
        wait_until(lambda: outcomes(worker) == 1, 20, "the first task")
        for _ in range(3):
            client.send_task("tests.workerapp.boom", queue=queue_name)
        wait_until(lambda: outcomes(worker) == 4, 20, "4 outcomes")
        samples = worker.metrics()
    assert value(samples, "celery_task_total", task_name="tests.workerapp.add",
                 status="success") == 1
    assert value(samples, "celery_task_total", task_name="other", status="failure") == 3
    assert value(samples, "celery_observe_dropped_label_values_total", label="task_name") == 3
    assert not [key for key in samples if ("task_name", "tests.workerapp.boom") in key[1]]


def test_allow_and_deny_lists_send_task_names_to_other() -> None:
    """Names outside the allow list, or on the deny list, are 'other'; the rest keep theirs."""
    label = BoundedLabel("task_name", 10, allow=["proj.*"], deny=["proj.noisy.*"])
    assert [label(name) for name in ("proj.a", "other.b", "proj.noisy.c", "proj.a")] == [
        "proj.a", "other", "other", "proj.a"]
    assert label.admitted == 1


def test_bounded_label_memory_stays_flat_for_a_million_values() -> None:
    """A million distinct values leave exactly max_values admitted; the rest are 'other'."""
    label = BoundedLabel("task_name", 1000)
    mapped = {label(f"task-{n}") for n in range(1_000_000)}
    assert len(mapped) == 1001 and "other" in mapped
    assert label.admitted == 1000


def test_pool_size_follows_autoscale(broker: str, queue_name: str) -> None:
    """With --autoscale the pool size gauge equals the number of pool processes."""
    with WorkerProcess(broker, queue_name, pool="prefork",
                       extra_args=("--autoscale", "3,1")) as worker:
        main = psutil.Process(worker.process.pid)  # type: ignore[union-attr]
        wait_until(lambda: value(worker.metrics(), "celery_worker_pool_size",
                                 worker_name=worker.hostname) == len(main.children()) >= 1,
                   15, "the gauge to match the pool")


def test_task_metrics_outside_a_worker_are_dropped() -> None:
    """Task code recording metrics outside an observed worker runs and records nothing."""
    from celery_observe import TaskCounter

    counter = TaskCounter("outside_total", "Counted outside a worker.", ["kind"])
    counter.labels("x").inc()
    with pytest.raises(ValueError, match="takes 1 label values"):
        counter.labels()
    with pytest.raises(ValueError, match="not a valid Prometheus metric name"):
        TaskCounter("9 lives", "bad")
