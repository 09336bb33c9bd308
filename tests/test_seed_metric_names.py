"""The task-processing seed's ``celery_tasks_total{queue,status}`` and the per-task
last-success timestamp that dead-man's-switch alerts read."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from celery import Celery
from kombu import Exchange, Queue, binding
from prometheus_client import CollectorRegistry

from celery_observe.cardinality import BoundedLabel
from celery_observe.config import DEFAULT_BUCKETS
from celery_observe.testing import Metrics, parse_metrics, wait_until
from celery_observe.worker.delivery import DeliveryQueues, resolve
from celery_observe.worker.exposition import Exposition
from celery_observe.worker.history import TaskHistory
from celery_observe.worker.metrics import TaskMetrics
from celery_observe.worker.outcome import SUCCESS, Outcome
from celery_observe.worker.recorder import Recorder

from .workers import WorkerProcess

T = "tests.workerapp."
STATUSES = ("success", "failure", "retry", "revoked", "rejected")
TOPIC = Exchange("events", type="topic")
QUEUES = {
    "high_priority": Queue("high_priority"),
    "reports": Queue("reports", TOPIC, routing_key="reports.#"),
    "audit": Queue("audit", bindings=[binding(TOPIC, routing_key="audit.write")]),
    "fan_a": Queue("fan_a", Exchange("fan", type="fanout")),
    "fan_b": Queue("fan_b", Exchange("fan", type="fanout")),
}


@pytest.mark.parametrize(("exchange", "routing_key", "queue"), [
    ("high_priority", "high_priority", "high_priority"),  # send_task(queue=...), routes
    ("", "high_priority", "high_priority"),  # the default exchange, by queue name
    ("events", "reports.#", "reports"),  # a queue's own exchange and key
    ("events", "audit.write", "audit"),  # one of a queue's declared bindings
    ("events", "reports.daily", None),  # a topic key two queues could take: unknown
    ("fan", "", None),  # a fanout both fan queues receive: unknown
    ("elsewhere", "nowhere", None),  # names no consumed queue
    (None, None, None),  # no delivery info at all
])
def test_a_delivery_names_the_queue_it_came_from(exchange: str | None, routing_key: str | None,
                                                 queue: str | None) -> None:
    """Exchange and routing key lead to one consumed queue, or to none when unsure."""
    assert resolve(QUEUES, exchange, routing_key) == queue


def test_an_unknown_delivery_is_other_and_a_queue_added_later_is_found() -> None:
    """A delivery naming no consumed queue is 'other' until a consumer for it is added."""
    consumed = dict(QUEUES)
    queues = DeliveryQueues(lambda: consumed)
    info = {"exchange": "late", "routing_key": "late"}
    assert queues(info) == "other"
    consumed["late"] = Queue("late")
    assert queues(info) == "late"


class Recorded:
    """A recorder on a fresh registry, with a wall clock the test sets, and its page."""

    def __init__(self) -> None:
        self.now = 1000.0
        registry = CollectorRegistry()
        metrics = TaskMetrics(registry, DEFAULT_BUCKETS)
        self.recorder = Recorder(metrics, TaskHistory(10), BoundedLabel("task_name", 10),
                                 wall_clock=lambda: self.now)
        self._exposition = Exposition(self.recorder, metrics, registry)

    def page(self) -> Metrics:
        return parse_metrics(self._exposition.render(False).decode())


def test_outcomes_count_by_queue_with_every_status_from_zero() -> None:
    """Each queue's first outcome brings its five status series; 'other' is a dropped value."""
    recorded = Recorded()
    recorder = recorded.recorder
    for queue, outcome in (("a", SUCCESS), ("a", SUCCESS), ("b", Outcome("retry")),
                           ("other", Outcome("failure", error_type="ValueError"))):
        recorder.finished("proj.t", outcome, 0.0, queue=queue)
    recorder.finished("proj.t", SUCCESS, 0.0)  # no delivery: no queue series
    got = recorded.page()
    totals = {(dict(labels)["queue"], dict(labels)["status"]): value
              for (name, labels), value in got.items() if name == "celery_tasks_total"}
    expected = {(q, s): 0.0 for q in ("a", "b", "other") for s in STATUSES}
    expected.update({("a", "success"): 2, ("b", "retry"): 1, ("other", "failure"): 1})
    assert totals == expected
    assert got.value("celery_observe_dropped_label_values_total", label="queue") == 1


def test_last_success_is_the_wall_clock_of_the_latest_success() -> None:
    """Set on each success, kept through later failures, absent for a task never succeeded."""
    recorded = Recorded()
    for now, outcome in ((1000.0, SUCCESS), (2000.0, SUCCESS),
                         (3000.0, Outcome("failure", error_type="KeyError"))):
        recorded.now = now
        recorded.recorder.finished("proj.ok", outcome, 0.0)
    recorded.recorder.finished("proj.never", Outcome("retry"), None)
    got = recorded.page()
    name = "celery_task_last_success_timestamp_seconds"
    assert got.value(name, task_name="proj.ok") == 2000.0
    assert got.value(name, task_name="proj.never") is None


@pytest.fixture
def second_queue(client: Celery, broker: str, queue_name: str) -> Iterator[str]:
    """A second queue of the test's own, deleted afterwards (the client deletes the first)."""
    name = f"{queue_name}-b"
    yield name
    if not broker.startswith("redis"):  # on Redis the client's prefix delete takes it
        with client.connection_for_write() as connection, contextlib.suppress(Exception):
            connection.default_channel.queue_delete(name)


@pytest.mark.broker
def test_a_real_worker_counts_outcomes_by_the_queue_they_came_from(
        broker: str, client: Celery, queue_name: str, second_queue: str) -> None:
    """Two consumed queues (one added by add_consumer): exact counts per queue and status,
    and a last-success time for each task that succeeded, none for the one that failed."""
    with WorkerProcess(broker, queue_name, pool="prefork") as worker:
        replies = client.control.add_consumer(second_queue, destination=[worker.hostname],
                                              reply=True, timeout=5)
        assert replies and "ok" in next(iter(replies[0].values()))
        before = time.time()
        for name, queue in (("add", queue_name), ("add", queue_name), ("boom", queue_name),
                            ("flaky", second_queue)):
            client.send_task(T + name, (1, 2) if name == "add" else (), queue=queue)
        wait_until(lambda: worker.metrics().total("celery_tasks_total") >= 5, 30,
                   f"5 outcomes\n{worker.log()}")
        got = worker.metrics()
        after = time.time()
    totals = {(dict(labels)["queue"], dict(labels)["status"]): value
              for (name, labels), value in got.items() if name == "celery_tasks_total"}
    expected = {(q, s): 0.0 for q in (queue_name, second_queue) for s in STATUSES}
    expected.update({(queue_name, "success"): 2, (queue_name, "failure"): 1,
                     (second_queue, "retry"): 1, (second_queue, "success"): 1})
    assert totals == expected
    stamps = {dict(labels)["task_name"]: value for (name, labels), value in got.items()
              if name == "celery_task_last_success_timestamp_seconds"}
    assert set(stamps) == {T + "add", T + "flaky"}
    assert all(before <= stamp <= after for stamp in stamps.values())
