"""What building, stopping and dropping the worker's parts leaves behind, and a failed set-up."""

from __future__ import annotations

import gc
import logging
import os
import threading
import uuid
import weakref
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from prometheus_client import CollectorRegistry

import celery_observe
from celery_observe.faults import FaultLog
from celery_observe.task_side.metrics import PipeWriter, TaskCounter
from celery_observe.worker.observer import Observer
from celery_observe.worker.task_metrics_receiver import TaskMetricsReceiver

SECRET = "s3cret"


def test_stopped_receiver_with_a_pipe_is_garbage_collected() -> None:
    """The at-fork hook of a receiver that opened its pipe does not keep it alive."""
    receiver = TaskMetricsReceiver(CollectorRegistry(), FaultLog())
    receiver.open_pipe()
    receiver.start()
    receiver.stop()
    dropped = weakref.ref(receiver)
    del receiver
    gc.collect()
    assert dropped() is None


def _same_file(fd: int, inode: int) -> bool:
    """Whether ``fd`` is still open on the file ``inode`` (not closed, not reused)."""
    try:
        return os.fstat(fd).st_ino == inode
    except OSError:
        return False


def test_stop_leaves_the_read_end_to_a_reader_thread_that_did_not_stop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """stop(timeout) does not close the pipe under a busy reader; the reader closes it."""
    receiver = TaskMetricsReceiver(CollectorRegistry(), FaultLog())
    applying, release = threading.Event(), threading.Event()

    def blocking_apply(_message: Any) -> None:
        applying.set()
        release.wait(10)

    monkeypatch.setattr(receiver, "apply", blocking_apply)
    receiver.open_pipe()
    receiver.start()
    read_fd, write_fd, reader = receiver._read_fd, receiver._write_fd, receiver._thread
    assert read_fd is not None and write_fd is not None and reader is not None
    inode = os.fstat(read_fd).st_ino
    PipeWriter(write_fd)((TaskCounter("lifecycle_total", "Test.").definition, (), "inc", 1.0))
    assert applying.wait(5)
    try:
        receiver.stop(timeout=0.05)
        assert reader.is_alive()
        assert _same_file(read_fd, inode)
    finally:
        release.set()
    reader.join(5)
    assert not reader.is_alive()
    assert not _same_file(read_fd, inode)


# Finalizing an app adds every shared task defined so far in the process; a test elsewhere
# defines one with the deprecated `queue` attribute, whose warning is not this test's.
@pytest.mark.filterwarnings(
    "ignore:(?s).*'queue' task attribute:celery.exceptions.CDeprecationWarning")
def test_failed_set_up_is_logged_masked_and_the_worker_runs_unobserved(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An exception in set-up quoting the broker password is logged masked; tasks still run."""
    app = Celery(f"lifecycle-{uuid.uuid4().hex[:8]}", broker=f"memory://:{SECRET}@localhost//",
                 backend="cache+memory://", set_as_current=False)
    app.conf.broker_transport_options = {"polling_interval": 0.01}
    app.conf.worker_hijack_root_logger = False
    app.task(name=f"{app.main}.double")(_double)
    celery_observe.install(app)

    def refuse(_observer: Observer, _worker: Any) -> None:
        raise RuntimeError(f"redis://:{SECRET}@host/0 refused: AUTH {SECRET} failed")

    monkeypatch.setattr(Observer, "attach", refuse)
    try:
        with caplog.at_level(logging.ERROR, logger="celery_observe"), start_worker(
                app, pool="solo", perform_ping_check=False, observe_port=0,
                observe_address="127.0.0.1") as worker:
            assert app.tasks[f"{app.main}.double"].delay(21).get(timeout=10) == 42
            assert getattr(worker, "celery_observe", None) is None
    finally:
        app.close()
    logged = [record for record in caplog.records if record.name == "celery_observe"]
    assert len(logged) == 1
    text = logged[0].getMessage()
    assert "could not set up observation" in text
    assert "redis://:**@host/0 refused: AUTH ** failed" in text
    assert SECRET not in caplog.text


def _double(x: int) -> int:
    return 2 * x
