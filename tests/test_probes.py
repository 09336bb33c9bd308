"""Liveness and readiness follow the real state of a worker's loop and broker connection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from celery import Celery
from celery.worker import state as worker_state

from celery_observe.config import ObserveConfig
from celery_observe.testing import wait_until
from celery_observe.worker.observer import Observer, shutdown_requested
from celery_observe.worker.probes import liveness, readiness

from .servers import PrivateRedis
from .workers import RELEASE_ENV, WorkerProcess


def test_liveness_rules() -> None:
    """Stale ticks fail liveness unless a solo task or a reconnect explains them."""
    assert liveness(None, 60).ok
    assert liveness(59.0, 60).ok
    assert not liveness(61.0, 60).ok
    assert liveness(61.0, 60, inline_task_running=True).ok
    assert liveness(61.0, 60, reconnecting=True).ok
    assert liveness(61.0, 60).http_status == 503


def test_readiness_reasons() -> None:
    """Readiness is 200 only when started, connected, consuming and not shutting down."""
    ready = {"started": True, "connected": True, "consuming": True, "shutting_down": False}
    assert readiness(**ready).ok
    for field, value, reason in (("shutting_down", True, "shutting down"),
                                 ("started", False, "not finished starting"),
                                 ("connected", False, "not connected"),
                                 ("consuming", False, "not consuming")):
        result = readiness(**{**ready, field: value})
        assert not result.ok and reason in result.body["reason"]


@pytest.mark.broker
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_blocked_main_loop_fails_liveness_then_recovers(broker: str, client: Celery,
                                                         queue_name: str) -> None:
    """/healthz turns 503 while the main loop hangs past the timeout, and 200 after."""
    with WorkerProcess(broker, queue_name, pool="prefork", concurrency=1,
                       extra_args=("--observe-liveness-timeout", "1")) as worker:
        assert worker.status_code("/healthz") == 200
        client.send_task("tests.workerapp.block_main_loop", queue=queue_name)
        wait_until(lambda: worker.status_code("/healthz") == 503, 10, "liveness to fail")
        wait_until(lambda: worker.status_code("/healthz") == 200, 10, "liveness to recover")


@pytest.mark.broker
def test_readiness_follows_the_broker_connection(private_redis: PrivateRedis,
                                                 queue_name: str) -> None:
    """/readyz is 503 while the broker is down, 200 after it returns; /healthz stays 200."""
    url = private_redis.url()
    with WorkerProcess(url, queue_name, pool="threads") as worker:
        private_redis.kill()
        wait_until(lambda: worker.status_code("/readyz") == 503, 15, "readiness to fail")
        assert worker.status_code("/healthz") == 200
        private_redis.start()
        wait_until(lambda: worker.status_code("/readyz") == 200, 30, "readiness to return")
        assert worker.status_code("/healthz") == 200


@pytest.mark.broker
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_a_worker_connected_but_still_starting_is_not_ready(broker: str, queue_name: str,
                                                            tmp_path: Path) -> None:
    """While a consumer step after the task consumer still runs (the event loop not yet
    started), /readyz is 503; once the start finishes it is 200."""
    release = tmp_path / "release"
    worker = WorkerProcess(broker, queue_name, pool="threads", app="tests.heldstartapp",
                           env={RELEASE_ENV: str(release)})
    worker.launch()
    try:
        worker.wait_serving()
        wait_until(release.with_name("release.held").exists, 30, "the start to be held")
        code, _, body = worker.get("/readyz")
        assert (code, json.loads(body)["reason"]) == (
            503, "the worker's consumer has not finished starting")
        release.touch()
        wait_until(lambda: worker.status_code("/readyz") == 200, 30, "readiness")
    finally:
        worker.stop()


def test_a_warm_shutdown_is_shutting_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery flags a warm shutdown with its exit code, 0: that is a shutdown too."""
    assert not shutdown_requested()
    monkeypatch.setattr(worker_state, "should_stop", 0)
    assert shutdown_requested()
    observer = Observer(Celery("probes", broker="memory://", set_as_current=False),
                        ObserveConfig(enabled=True))
    try:
        assert observer.readiness().body["reason"] == "the worker is shutting down"
    finally:
        observer.stop()
