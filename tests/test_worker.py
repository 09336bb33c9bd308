"""A real `celery worker --observe`: its endpoints, a busy port, and every kind of shutdown."""

from __future__ import annotations

import gzip
import json
import signal
import socket
from typing import Any

import psutil
import pytest
from celery import Celery
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from celery_observe.testing import WorkerError, parse_metrics, wait_until

from .workers import WorkerProcess

pytestmark = pytest.mark.broker


def test_probes_and_status_answer(broker: str, client: Celery, queue_name: str) -> None:
    """/healthz and /readyz are 200 and /status describes the worker and its outcomes."""
    with WorkerProcess(broker, queue_name, pool="threads", concurrency=3) as worker:
        client.send_task("tests.workerapp.add", (1, 2), queue=queue_name)
        wait_until(lambda: json.loads(worker.get("/status")[2])["counts"]["success"] == 1,
                   20, "the task to succeed")
        status_code, _, body = worker.get("/healthz")
        assert status_code == 200 and json.loads(body)["status"] == "alive"
        status_code, _, body = worker.get("/readyz")
        assert (status_code, json.loads(body)) == (200, {"status": "ready"})
        status = json.loads(worker.get("/status")[2])
    assert status["hostname"] == worker.hostname
    assert (status["pool"], status["concurrency"], status["active_count"]) == ("threads", 3, 0)
    assert status["counts"] == {"success": 1, "failure": 0, "retry": 0, "revoked": 0,
                                "rejected": 0}


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_metrics_negotiates_format_and_compression(broker: str, queue_name: str) -> None:
    """/metrics is Prometheus text, OpenMetrics when asked, and gzip when accepted."""
    with WorkerProcess(broker, queue_name, pool="solo") as worker:
        _, headers, text = worker.get("/metrics")
        _, om_headers, openmetrics = worker.get(
            "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        _, gz_headers, zipped = worker.get("/metrics", {"Accept-Encoding": "gzip"})
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert om_headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.endswith(b"# EOF\n")
    assert gz_headers["Content-Encoding"] == "gzip"
    info = parse_metrics(gzip.decompress(zipped).decode())
    assert info[("celery_worker_info", frozenset({
        ("worker_name", worker.hostname), ("pool", "solo"), ("concurrency", "1"),
        ("celery_version", __import__("celery").__version__)}))] == 1.0
    assert b"celery_task_total" in text


def created_stamps(page: bytes, openmetrics: bool) -> dict[tuple[str, frozenset[Any]], float]:
    """Every ``_created`` sample of ``page``, by name and labels."""
    parse = (openmetrics_families if openmetrics else text_string_to_metric_families)
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in parse(page.decode()) for sample in family.samples
            if sample.name.endswith("_created")}


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_created_stamps_stay_put_while_a_task_records_more(broker: str, client: Celery,
                                                           queue_name: str) -> None:
    """A series' ``_created`` is when it was first seen: scraped, then recorded into again
    (the cached lines written anew), it says the same, in both formats alike."""
    accept = {False: {}, True: {"Accept": "application/openmetrics-text; version=1.0.0"}}

    def ended() -> tuple[int, int]:
        counts = json.loads(worker.get("/status")[2])["counts"]
        return counts["success"], counts["failure"]

    def run(adds: int, booms: int, counts: tuple[int, int]) -> dict[bool, Any]:
        for _ in range(adds):
            client.send_task("tests.workerapp.add", (1, 2), queue=queue_name)
        for _ in range(booms):
            client.send_task("tests.workerapp.boom", queue=queue_name)
        wait_until(lambda: ended() == counts, 20, "the tasks to end")
        return {openmetrics: created_stamps(worker.get("/metrics", headers)[2], openmetrics)
                for openmetrics, headers in accept.items()}

    with WorkerProcess(broker, queue_name, pool="prefork") as worker:
        first = run(2, 1, (2, 1))
        second = run(3, 1, (5, 2))
        totals = worker.metrics()
    assert first[False] == first[True]  # one stamp per series, whichever the format
    task_stamps = {key for key in first[False] if any(
        label == "task_name" for label, _ in key[1])}
    assert len(task_stamps) >= 8  # counters and histograms of both tasks
    for openmetrics in (False, True):
        assert second[openmetrics] == first[openmetrics]
    assert totals[("celery_task_total", frozenset({
        ("task_name", "tests.workerapp.add"), ("status", "success")}))] == 5.0


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_busy_port_leaves_the_worker_running(broker: str, client: Celery,
                                             queue_name: str) -> None:
    """When the port is taken the worker logs how to fix it and still processes tasks."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = WorkerProcess(broker, queue_name, pool="solo", port=port)
        worker.start(serving=False)
        try:
            client.send_task("tests.workerapp.add", (1, 2), queue=queue_name)
            inspect = client.control.inspect([worker.hostname], timeout=1)
            stats = wait_until(
                lambda: (inspect.stats() or {}).get(worker.hostname, {}).get("total") and
                inspect.stats()[worker.hostname], 20, "the worker to process a task")
            assert stats["total"] == {"tests.workerapp.add": 1}
            assert stats["celery_observe"] == {"address": "127.0.0.1", "port": None}
            assert worker.process is not None and worker.process.poll() is None
        finally:
            worker.stop()
    log = worker.log()
    assert f"cannot listen on 127.0.0.1:{port}" in log
    assert "--observe-port" in log


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_shutdown_releases_the_port(broker: str, client: Celery, queue_name: str,
                                    sig: signal.Signals) -> None:
    """Warm and cold shutdown free the port, even with a pool child forked after the server."""
    with WorkerProcess(broker, queue_name, pool="prefork", concurrency=1,
                       extra_args=("--max-tasks-per-child", "1")) as worker:
        assert worker.process is not None
        main = psutil.Process(worker.process.pid)
        first_children = {child.pid for child in main.children()}
        client.send_task("tests.workerapp.add", (1, 2), queue=queue_name)  # recycles the child
        wait_until(lambda: worker.metrics().get(
            ("celery_task_total", frozenset({("task_name", "tests.workerapp.add"),
                                             ("status", "success")}))), 20, "the task")
        forked_later = wait_until(
            lambda: [c for c in main.children() if c.pid not in first_children], 20,
            "a new child")

        def listening() -> list[Any]:
            return [c for child in forked_later for c in child.net_connections("tcp")
                    if c.status == psutil.CONN_LISTEN]

        # The child closes its inherited copy right after the fork, in an at-fork handler.
        wait_until(lambda: not listening(), 5, "the new child to close the listening socket")
        worker.stop(sig)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", worker.port or 0), timeout=2)
    with socket.socket() as again:  # as a restarted worker would: fails while anyone listens
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", worker.port or 0))
        again.listen()


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_a_worker_that_does_not_stop_in_time_shows_where_it_is(broker: str, client: Celery,
                                                               queue_name: str) -> None:
    """stop() fails on a worker still busy when its time is up, with every thread's stack
    in the message (Celery's SIGUSR1 dump), so a hang says where it hangs; then kills it."""
    worker = WorkerProcess(broker, queue_name, pool="solo")
    with worker:
        client.send_task("tests.workerapp.sleep", (60,), queue=queue_name)
        wait_until(lambda: "tests.workerapp.sleep" in worker.get("/status")[2].decode(), 20,
                   "the task to run")
        with pytest.raises(WorkerError, match=r"(?s)ignored 15 for 1 s.*in sleep\n"):
            worker.stop(timeout=1)
    assert worker.process is not None and worker.process.returncode == -signal.SIGKILL
