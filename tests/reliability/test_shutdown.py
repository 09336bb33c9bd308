"""Shutdown by any signal during a long task leaves nothing behind, and the port is free."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import psutil
import pytest
from celery import Celery

from celery_observe.testing import wait_until

from ..workers import WorkerProcess

LONG_TASK_SECONDS = 3


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.broker
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
@pytest.mark.parametrize("signals_sent", [
    (signal.SIGTERM,), (signal.SIGINT,), (signal.SIGQUIT,), (signal.SIGTERM, signal.SIGTERM),
], ids=["TERM", "INT", "QUIT", "TERM-TERM"])
def test_shutdown_during_a_long_task_releases_the_port_and_every_process(
        broker: str, client: Celery, queue_name: str,
        signals_sent: tuple[signal.Signals, ...], figure: Callable[[str, str], None]) -> None:
    """The worker and its pool exit, the port is released, and a new worker binds it at once."""
    worker = WorkerProcess(broker, queue_name, pool="prefork", concurrency=1)
    worker.start()
    assert worker.process is not None and worker.port is not None
    port, main = worker.port, psutil.Process(worker.process.pid)
    family = [main, *main.children(recursive=True)]
    client.send_task("tests.workerapp.sleep", (LONG_TASK_SECONDS,), queue=queue_name)
    wait_until(lambda: json.loads(worker.get("/status")[2])["active_count"] == 1, 10,
               "the long task to start")

    began = time.monotonic()
    for sig in signals_sent:
        worker.process.send_signal(sig)
        wait_until(lambda: worker.count_in_log("worker: Warm shutdown") +
                   worker.count_in_log("worker: Cold shutdown") >= 1, 10,
                   "the worker to begin shutting down")
    exit_code = worker.process.wait(LONG_TASK_SECONDS + 20)
    exited = time.monotonic() - began
    wait_until(lambda: all(gone(process) for process in family), 10,
               "the worker's pool processes to exit")

    restarted = WorkerProcess(broker, queue_name, pool="threads", port=port,
                              name=f"{queue_name}-again")
    with restarted:
        assert restarted.port == port
        assert restarted.status_code("/healthz") == 200
    figure(f"{'+'.join(sig.name for sig in signals_sent)} during a {LONG_TASK_SECONDS} s task",
           f"worker exited with {exit_code} after {exited:.2f} s; port {port} bound again "
           f"by the next worker")
