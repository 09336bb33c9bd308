"""`install(app)` observes programmatic workers; observation faults never reach a task."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_observe
from celery_observe.testing import parse_metrics, wait_until
from celery_observe.worker.observer import Observer


def make_app() -> Celery:
    app = Celery(f"inprocess-{uuid.uuid4().hex[:8]}", broker="memory://",
                 backend="cache+memory://", set_as_current=False)
    app.conf.broker_transport_options = {"polling_interval": 0.01}
    app.task(name=f"{app.main}.double")(double)
    celery_observe.install(app)
    return app


def double(x: int) -> int:
    return 2 * x


@pytest.fixture
def app() -> Iterator[Celery]:
    app = make_app()
    yield app
    app.close()


@pytest.fixture
def worker(app: Celery) -> Iterator[Any]:
    with start_worker(app, pool="solo", perform_ping_check=False, observe_port=0,
                      observe_address="127.0.0.1") as worker:
        yield worker


def samples(observer: Observer) -> dict[Any, float]:
    from prometheus_client import generate_latest
    return parse_metrics(generate_latest(observer).decode())


def successes(observer: Observer, task: str) -> float:
    return samples(observer).get(
        ("celery_task_total", frozenset({("task_name", task), ("status", "success")})), 0.0)


def test_install_observes_a_worker_started_from_code(app: Celery, worker: Any) -> None:
    """A worker built with app.Worker machinery serves and counts after install(app)."""
    observer: Observer = worker.celery_observe
    assert observer.bound_port is not None
    results = [app.tasks[f"{app.main}.double"].delay(n) for n in range(5)]
    assert [result.get(timeout=10) for result in results] == [0, 2, 4, 6, 8]
    wait_until(lambda: successes(observer, f"{app.main}.double") == 5, 10, "5 successes")


def test_install_twice_adds_each_step_once(app: Celery) -> None:
    """install() is idempotent."""
    celery_observe.install(app)
    names = [step.__name__ for step in app.steps["worker"] | app.steps["consumer"]]
    assert sorted(names) == ["ObserveConsumerStep", "ObserveStep"]


def test_recorder_fault_leaves_tasks_untouched(app: Celery, worker: Any,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A recorder that raises changes no result, is counted per fault and logged once."""
    observer: Observer = worker.celery_observe

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected fault")

    observer.recorder.finished = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="celery_observe"):
        results = [app.tasks[f"{app.main}.double"].delay(n) for n in range(3)]
        assert [result.get(timeout=10) for result in results] == [0, 2, 4]
    faults = samples(observer)[("celery_observe_internal_errors_total",
                                frozenset({("component", "recorder")}))]
    assert faults == 3
    assert len([r for r in caplog.records if r.name == "celery_observe"]) == 1


def test_task_registered_after_start_is_hooked_on_consumer_start(app: Celery,
                                                                 worker: Any) -> None:
    """A task registered after the worker built its strategies is counted after a restart."""
    observer: Observer = worker.celery_observe

    @app.task(name=f"{app.main}.late")
    def late() -> str:
        return "late"

    observer.consumer_started(worker.consumer)  # what each consumer (re)start runs
    assert app.tasks[f"{app.main}.late"].delay().get(timeout=10) == "late"
    wait_until(lambda: successes(observer, f"{app.main}.late") == 1, 10, "the late task")


def test_stop_gives_tasks_their_request_class_back(app: Celery) -> None:
    """After the worker stops, no task keeps the observed Request class."""
    with start_worker(app, pool="solo", perform_ping_check=False, observe_port=0):
        assert app.tasks[f"{app.main}.double"].Request.__name__ == "ObservedRequest"
    assert app.tasks[f"{app.main}.double"].Request == "celery.worker.request:Request"
