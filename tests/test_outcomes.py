"""Every task outcome is counted exactly once, by a real worker, under each pool and broker."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_observe.testing import wait_until

from .workers import WorkerProcess

T = "tests.workerapp."


def nonzero(samples: dict[Any, float], name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (sample, labels), value in samples.items()
            if sample == name and value != 0}


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def revoke_while_waiting_on_eta(client: Celery, worker: WorkerProcess) -> None:
    """Send an ETA task, wait until the worker holds it, revoke it."""
    task_id = str(uuid.uuid4())
    client.send_task(T + "add", (1, 1), queue=worker.queue, countdown=3, task_id=task_id)

    def scheduled() -> bool:
        replies = client.control.inspect([worker.hostname], timeout=0.5).scheduled() or {}
        return any(entry["request"]["id"] == task_id
                   for entries in replies.values() for entry in entries)

    wait_until(scheduled, 15, "the ETA task to be scheduled on the worker")
    client.control.revoke(task_id)


def revoke_running_with_terminate(client: Celery, worker: WorkerProcess) -> None:
    task_id = str(uuid.uuid4())
    client.send_task(T + "sleep", (30,), queue=worker.queue, task_id=task_id)

    def running() -> bool:
        import json
        status = json.loads(worker.get("/status")[2])
        return any(task["id"] == task_id for task in status["active"])

    wait_until(running, 15, "the long task to start")
    client.control.revoke(task_id, terminate=True)


@pytest.mark.broker
@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_mixed_batch_is_counted_exactly(pool: str, broker: str, client: Celery,
                                        queue_name: str) -> None:
    """A mixed batch yields exact counts, errors, retries, timeouts and durations."""
    expected_total = {
        ("add", "success"): 1, ("add", "revoked"): 1, ("boom", "failure"): 1,
        ("flaky", "retry"): 1, ("flaky", "success"): 1, ("reject", "rejected"): 1,
    }
    expected_errors = {("boom", "ValueError"): 1}
    expected_retries = {("flaky", "KeyError"): 1}
    expected_timeouts: dict[str, int] = {}
    marker = Path(tempfile.mkdtemp()) / "died"
    with WorkerProcess(broker, queue_name, pool=pool) as worker:
        revoke_while_waiting_on_eta(client, worker)
        for name, args in (("add", (2, 3)), ("boom", ()), ("flaky", ()), ("reject", ())):
            client.send_task(T + name, args, queue=queue_name)
        if pool == "prefork":  # the cases only a pool of child processes can have
            revoke_running_with_terminate(client, worker)
            for name, args in (("exit_child", ()), ("over_hard_limit", ()),
                               ("over_soft_limit", ()), ("exit_child_once", (str(marker),))):
                client.send_task(T + name, args, queue=queue_name)
            expected_total.update({
                ("sleep", "revoked"): 1, ("exit_child", "failure"): 1,
                ("over_hard_limit", "failure"): 1, ("over_soft_limit", "failure"): 1,
                ("exit_child_once", "retry"): 1, ("exit_child_once", "success"): 1,
            })
            expected_errors.update({
                ("exit_child", "WorkerLostError"): 1, ("over_hard_limit", "TimeLimitExceeded"): 1,
                ("over_soft_limit", "SoftTimeLimitExceeded"): 1,
            })
            expected_retries[("exit_child_once", "WorkerLostError")] = 1
            expected_timeouts = {"over_hard_limit": 1, "over_soft_limit": 1}

        total = sum(expected_total.values())
        wait_until(
            lambda: sum(nonzero(worker.metrics(), "celery_task_total").values()) >= total,
            60, f"{total} outcomes\n{worker.log()}")
        samples = worker.metrics()

    assert nonzero(samples, "celery_task_total") == {
        labels(task_name=T + task, status=status): count
        for (task, status), count in expected_total.items()}
    assert nonzero(samples, "celery_task_errors_total") == {
        labels(task_name=T + task, error_type=error): count
        for (task, error), count in expected_errors.items()}
    assert nonzero(samples, "celery_task_retries_total") == {
        labels(task_name=T + task, reason=reason): count
        for (task, reason), count in expected_retries.items()}
    assert nonzero(samples, "celery_task_timeouts_total") == {
        labels(task_name=T + task): count for task, count in expected_timeouts.items()}
    assert nonzero(samples, "celery_active_tasks") == {}
    started = {key: count for key, count in expected_total.items() if key != ("add", "revoked")}
    assert nonzero(samples, "celery_task_duration_seconds_count") == {
        labels(task_name=T + task, status=status): count
        for (task, status), count in started.items()}
    failures = {key[0]: count for key, count in expected_total.items() if key[1] == "failure"}
    assert nonzero(samples, "celery_task_failure_rate") == {
        labels(task_name=T + task): count for task, count in failures.items()}
