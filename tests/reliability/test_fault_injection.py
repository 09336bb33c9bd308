"""Faults injected into every part of celery-observe cost no task, and each is logged once.

The worker runs ``tests.reliability.faultyapp``, which makes the named parts of
celery-observe raise on every call. Celery's own log lines ("succeeded in", "raised
unexpected", "retry: Retry in") say what really happened to each task.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from celery import Celery

from celery_observe.testing import parse_metrics, wait_until

from ..conftest import broker_url
from ..workers import WorkerProcess

FAULTY_APP = "tests.reliability.faultyapp"
SKIPPED = "celery-observe: {} failed and was skipped"
ADDS, BOOMS, FLAKIES, RECORDS, ITEMS_PER_RECORD = 500, 20, 10, 20, 3
SUCCEEDED = ADDS + FLAKIES + RECORDS  # each flaky task succeeds on its second run
FAILED_RUNS = BOOMS + FLAKIES  # boom's failures and flaky's first runs (retries)


def faulty_worker(queue: str, faults: str, *extra_args: str) -> WorkerProcess:
    return WorkerProcess(broker_url("redis"), queue, concurrency=1, app=FAULTY_APP,
                         env={"CELERY_OBSERVE_TEST_FAULTS": faults}, extra_args=extra_args)


def run_batch(client: Celery, queue: str, worker: WorkerProcess) -> float:
    """Send the mixed batch, wait for Celery to report every run; returns the seconds taken."""
    began = time.monotonic()
    for n in range(ADDS):
        client.send_task("tests.workerapp.add", (n, n), queue=queue)
    for _ in range(BOOMS):
        client.send_task("tests.workerapp.boom", queue=queue)
    for _ in range(FLAKIES):
        client.send_task("tests.workerapp.flaky", queue=queue)
    for _ in range(RECORDS):
        client.send_task("tests.metricsapp.record_items", ("a", ITEMS_PER_RECORD), queue=queue)
    wait_until(lambda: worker.count_in_log("succeeded in") == SUCCEEDED, 60,
               f"{SUCCEEDED} successes in Celery's log")
    elapsed = time.monotonic() - began
    assert worker.count_in_log("raised unexpected: ValueError('boom')") == BOOMS
    assert worker.count_in_log("retry: Retry in") == FLAKIES
    assert worker.count_in_log("succeeded in") == SUCCEEDED
    return elapsed


def faults_of(samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
              component: str) -> float:
    return samples.get(("celery_observe_internal_errors_total",
                        frozenset({("component", component)})), 0.0)


@pytest.mark.broker
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_faults_on_the_task_path_change_no_outcome(
        broker: str, client: Celery, queue_name: str,
        figure: Callable[[str, str], None]) -> None:
    """Recorder, classifier, task metrics, resources, queue and pool collectors all raising:
    every task ends as without celery-observe, each fault kind is logged once and counted."""
    with WorkerProcess(broker, queue_name, concurrency=1, app=FAULTY_APP) as clean:
        clean_seconds = run_batch(client, queue_name, clean)
    parts = "recorder,classify,task metrics,resources,queues,collectors"
    with faulty_worker(queue_name, parts, "--observe-resource-interval", "0.1") as worker:
        faulty_seconds = run_batch(client, queue_name, worker)
        wait_until(lambda: worker.count_in_log(SKIPPED.format("resources")), 10,
                   "a resource sample to fail")
        scrapes = [worker.get("/metrics") for _ in range(3)]
        assert [status for status, _, _ in scrapes] == [200, 200, 200]
        samples = parse_metrics(scrapes[-1][2].decode())

        runs = SUCCEEDED + FAILED_RUNS
        assert faults_of(samples, "recorder") == runs + SUCCEEDED  # each start and success end
        assert faults_of(samples, "classify") == FAILED_RUNS
        # each record_items run sends ITEMS_PER_RECORD increments, one observe and one set
        assert faults_of(samples, "task metrics") == RECORDS * (ITEMS_PER_RECORD + 2)
        for collector in ("failure rate", "pool metrics", "cache metrics"):
            assert faults_of(samples, collector) == 2  # the two scrapes before this one
        assert faults_of(samples, "queues") >= 1
        assert faults_of(samples, "resources") >= 1
        assert ("celery_task_total", frozenset({("task_name", "tests.workerapp.add"),
                                                ("status", "success")})) not in samples
        assert worker.status_code("/healthz") == 200

    for component in ("recorder", "classify", "task metrics", "resources", "queues",
                      "failure rate", "pool metrics", "cache metrics"):
        assert worker.count_in_log(SKIPPED.format(component)) == 1, component
    figure("drain seconds, clean vs every task-path part faulty (-c 1)",
           f"{clean_seconds:.2f} vs {faulty_seconds:.2f} "
           f"(faulty at {clean_seconds / faulty_seconds:.2f} of clean speed)")


@pytest.mark.broker
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_faults_in_endpoints_answer_errors_and_the_worker_works_on(
        broker: str, client: Celery, queue_name: str) -> None:
    """Every endpoint's source raising: /healthz stays 200 (fails open), /readyz 503,
    /metrics and /status 500, remote commands an error reply; pool-child metric writes
    failing cost no task; each fault kind is logged once."""
    worker = faulty_worker(queue_name, "endpoints,task metrics (pool child)")
    worker.start(probe_ready=False)
    try:
        run_batch(client, queue_name, worker)
        for _ in range(2):
            assert worker.status_code("/healthz") == 200
            assert worker.status_code("/readyz") == 503
            assert worker.status_code("/metrics") == 500
            assert worker.status_code("/status") == 500
        assert b'"status": "unknown"' in worker.get("/healthz")[2]
        for command in ("observe_status", "observe_health", "observe_tasks"):
            for _ in range(2):
                replies = client.control.broadcast(
                    command, arguments={"use_cache": "false"}, reply=True, timeout=5,
                    destination=[worker.hostname])
                assert replies == [{worker.hostname: {
                    "error": f"{command} failed inside the worker; see its log"}}]
    finally:
        worker.stop()
    for component in ("http /metrics", "http /status", "http /healthz", "http /readyz",
                      "control observe_status", "control observe_health",
                      "control observe_tasks", "task metrics (pool child)"):
        assert worker.count_in_log(SKIPPED.format(component)) == 1, component


@pytest.mark.broker
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_a_fault_while_setting_up_leaves_the_worker_unobserved_but_working(
        broker: str, client: Celery, queue_name: str) -> None:
    """If hooking the tasks fails at start, the worker runs every task, unobserved."""
    worker = faulty_worker(queue_name, "setup")
    worker.start(serving=False)
    try:
        run_batch(client, queue_name, worker)
    finally:
        worker.stop()
    assert worker.count_in_log("could not set up observation of this worker") == 1
    assert worker.count_in_log("celery-observe: serving") == 0
