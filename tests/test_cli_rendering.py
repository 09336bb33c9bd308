"""`celery observe`: the text it prints and the health command's exit codes, with no broker.

The renderers get hand-built data of the shapes ``Cluster`` returns;
the commands run through click's CliRunner against a fake Cluster with canned answers.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, ClassVar

import pytest
from celery import Celery
from click.testing import CliRunner, Result

import celery_observe.cluster.client
from celery_observe.cluster.cli import (
    _render_health,
    _render_history,
    _render_queues,
    _render_status,
    _render_tasks,
    _render_workers,
    observe,
    table,
)
from celery_observe.cluster.client import BrokerUnreachableError

#: 14:05:09 local time, so the rendered clock is the same in every time zone.
ENDED = datetime(2026, 11, 23, 14, 5, 9).timestamp()

WORKERS = {
    "w2@b": {"pool": "threads", "concurrency": 8, "active_count": 0, "reserved_count": 0,
             "counts": {"success": 7, "failure": 0}, "ready": False, "http_port": None,
             "rss_bytes": None, "uptime_seconds": 42.7},
    "w1@a": {"pool": "prefork", "concurrency": 4, "active_count": 2, "reserved_count": 1,
             "counts": {"success": 120, "failure": 3}, "ready": True, "http_port": 9808,
             "rss_bytes": 183 * 2**20 + 1, "uptime_seconds": 2 * 86400 + 3 * 3600 + 59},
}
WORKERS_TABLE = """\
WORKER  POOL     CONC  ACTIVE  RESERVED  SUCCESS  FAILURE  READY  PORT  RSS     UPTIME
------  -------  ----  ------  --------  -------  -------  -----  ----  ------  ------
w1@a    prefork  4     2       1         120      3        yes    9808  183MiB  2d03h
w2@b    threads  8     0       0         7        0        NO     -     -       42s
w3@c    missing  -     -       -         -        -        NO     -     -       -"""


def verdict(status: str, message: str, recommendations: list[str]) -> dict[str, Any]:
    """A cluster health verdict as Cluster.health() returns it."""
    report = {"alive": True, "ready": True, "active_count": 2, "reserved_count": 1}
    return {"status": status, "message": message, "broker_connected": True,
            "workers": {"healthy": True, "active_workers": ["w1@a", "w2@b"], "worker_count": 2},
            "queues": {"celery": 3, "slow": -1}, "recommendations": recommendations,
            "details": {"w2@b": {**report, "ready": False, "active_count": 0,
                                 "reserved_count": 0}, "w1@a": report}}


DEGRADED = verdict("degraded", "worker w3@c stopped answering",
                   ["Check the logs of w3@c; restart it if it is gone"])


def test_table_pads_columns_and_shows_none_as_dash() -> None:
    """table(): columns as wide as their widest cell, None as "-", no trailing spaces."""
    assert table([("a", None, 3), ("long-cell", 1.5, "")], ["X", "WIDE HEADER", "Z"]) == (
        "X          WIDE HEADER  Z\n"
        "---------  -----------  -\n"
        "a          -            3\n"
        "long-cell  1.5")


def test_health_text() -> None:
    """Health: verdict, worker count, queue depths, then one "->" line per recommendation."""
    assert _render_health(DEGRADED, verbose=False) == (
        "DEGRADED: worker w3@c stopped answering\n"
        "workers: 2\n"
        "queues: celery=3, slow=-1\n"
        "-> Check the logs of w3@c; restart it if it is gone")


def test_health_text_verbose_lists_every_worker() -> None:
    """Health -v: the worker names, and one line per worker sorted by hostname."""
    assert _render_health(DEGRADED, verbose=True) == (
        "DEGRADED: worker w3@c stopped answering\n"
        "workers: 2 (w1@a, w2@b)\n"
        "queues: celery=3, slow=-1\n"
        "  w1@a: alive=True ready=True active=2 reserved=1\n"
        "  w2@b: alive=True ready=False active=0 reserved=0\n"
        "-> Check the logs of w3@c; restart it if it is gone")


def test_health_text_without_queues_or_advice() -> None:
    """Health with no queue known shows "queues: -" and no recommendation lines."""
    data = {**verdict("healthy", "All systems operational", []), "queues": {}}
    assert _render_health(data, verbose=False) == (
        "HEALTHY: All systems operational\nworkers: 2\nqueues: -")


def test_workers_table() -> None:
    """Workers: one row per worker sorted by hostname, then the missing ones; RSS in MiB,
    uptime in its two largest units."""
    assert _render_workers({"workers": WORKERS, "missing": ["w3@c"]}) == WORKERS_TABLE


def test_status_text() -> None:
    """Status: a summary line, the workers table, then the queues table."""
    data = {"workers_online": 2, "workers": WORKERS, "missing": ["w3@c"],
            "totals": {"active": 2, "reserved": 1, "concurrency": 12},
            "broker": "redis://:**@localhost:6379/0", "queues": {}}
    head = ("2 worker(s) online, 2 active of 12 slots, 1 reserved  "
            "(broker redis://:**@localhost:6379/0)")
    assert _render_status(data) == "\n\n".join([head, WORKERS_TABLE, _render_queues({})])


def test_tasks_table() -> None:
    """Tasks: running, reserved, scheduled in that order; start as a clock, or the ETA."""
    def task(worker: str, name: str, task_id: str, **times: Any) -> dict[str, Any]:
        return {"worker": worker, "name": name, "id": task_id, "time_start": None, **times}

    assert _render_tasks({
        "running": [task("w1@a", "proj.add", "id-1", time_start=ENDED)],
        "reserved": [task("w1@a", "proj.mul", "id-2")],
        "scheduled": [task("w2@b", "proj.later", "id-3", eta="2026-11-23T15:00:00+00:00")]}) == (
        "STATE      WORKER  TASK        ID    SINCE/ETA\n"
        "---------  ------  ----------  ----  -------------------------\n"
        "running    w1@a    proj.add    id-1  14:05:09\n"
        "reserved   w1@a    proj.mul    id-2  -\n"
        "scheduled  w2@b    proj.later  id-3  2026-11-23T15:00:00+00:00")


def test_history_table() -> None:
    """History: end clock, duration to the millisecond, "-" for no error or no duration."""
    def entry(worker: str, name: str, state: str, error: str | None, duration: float | None,
              task_id: str) -> dict[str, Any]:
        return {"ended": ENDED, "worker": worker, "name": name, "state": state,
                "error_type": error, "duration_seconds": duration, "id": task_id}

    assert _render_history({"tasks": [
        entry("w1@a", "proj.add", "success", None, 0.0123456, "id-1"),
        entry("w2@b", "proj.div", "revoked", None, None, "id-9"),
        entry("w2@b", "proj.div", "failure", "ZeroDivisionError", 1.5, "id-8")]}) == (
        "ENDED     WORKER  TASK      STATE    ERROR              DURATION  ID\n"
        "--------  ------  --------  -------  -----------------  --------  ----\n"
        "14:05:09  w1@a    proj.add  success  -                  0.012s    id-1\n"
        "14:05:09  w2@b    proj.div  revoked  -                  -         id-9\n"
        "14:05:09  w2@b    proj.div  failure  ZeroDivisionError  1.500s    id-8")


@pytest.mark.parametrize(("render", "data", "text"), [
    (_render_workers, {"workers": {}, "missing": []}, "No observed workers answered."),
    (_render_tasks, {"running": [], "reserved": [], "scheduled": []}, "No tasks."),
    (_render_history, {"tasks": []}, "No finished tasks yet."),
], ids=["workers", "tasks", "history"])
def test_nothing_to_show_is_a_sentence(render: Callable[[dict[str, Any]], str],
                                       data: dict[str, Any], text: str) -> None:
    """Workers, tasks and history with nothing in them print a sentence, not an empty table."""
    assert render(data) == text


def test_queues_table() -> None:
    """Queues: depth ("?" unknown), oldest age, consumers or a hint when no worker consumes."""
    def queue(length: int | None, age: float | None, consumers: list[str],
              unconsumed: bool = False) -> dict[str, Any]:
        return {"length": length, "by_priority": {}, "oldest_message_age_seconds": age,
                "consumers": consumers, "unconsumed": unconsumed}

    assert _render_queues({"celery": queue(3, 12.34, ["w1@a", "w2@b"]),
                           "idle": queue(0, None, []),
                           "orphan": queue(5, None, [], unconsumed=True),
                           "unknown": queue(None, None, ["w1@a"])}) == (
        "QUEUE    WAITING  OLDEST  CONSUMERS\n"
        "-------  -------  ------  -----------------------------------\n"
        "celery   3        12.3s   w1@a, w2@b\n"
        "idle     0        -       -\n"
        "orphan   5        -       NONE: start a worker with -Q orphan\n"
        "unknown  ?        -       w1@a")


class FakeCluster:
    """Stands in for Cluster: canned answers, or BrokerUnreachableError when ``down``."""

    answer: ClassVar[dict[str, Any]] = {}
    down: ClassVar[bool] = False
    made: ClassVar[list[FakeCluster]] = []

    def __init__(self, app: Celery, **options: Any) -> None:
        self.app, self.options, self.queue_threshold, self.closed = app, options, None, False
        FakeCluster.made.append(self)

    def health(self) -> dict[str, Any]:
        return self.answer

    def status(self) -> dict[str, Any]:
        if self.down:
            raise BrokerUnreachableError("ConnectionRefusedError: [Errno 111] Connection "
                                         "refused (broker redis://localhost:6379/0)")
        return self.answer

    tasks = queues = status

    def history(self, limit: int, **search: Any) -> dict[str, Any]:
        return self.status()

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every command of these tests talks to a FakeCluster; its class state is restored after."""
    monkeypatch.setattr(celery_observe.cluster.client, "Cluster", FakeCluster)
    for name, value in (("answer", DEGRADED), ("down", False), ("made", [])):
        monkeypatch.setattr(FakeCluster, name, value)
    yield


def run(*arguments: str) -> Result:
    app = Celery("cli", set_as_current=False)
    try:
        return CliRunner().invoke(observe, list(arguments), obj=types.SimpleNamespace(app=app))
    finally:
        app.close()


@pytest.mark.parametrize(("status", "code"), [("healthy", 0), ("degraded", 1), ("unhealthy", 2),
                                              ("confused", 2)])
def test_health_exit_code(status: str, code: int) -> None:
    """`observe health` exits 0/1/2 for healthy/degraded/unhealthy, 2 for anything else."""
    FakeCluster.answer = {**DEGRADED, "status": status}
    result = run("health")
    assert (result.exit_code, result.stdout.splitlines()[0]) == (
        code, f"{status.upper()}: worker w3@c stopped answering")


def test_health_with_the_broker_unreachable() -> None:
    """Cluster.health() answers an unreachable broker with a verdict: printed, exit 2."""
    FakeCluster.answer = {
        **verdict("unhealthy", "the broker cannot be reached: OSError: refused",
                  ["Check that the broker (Redis/RabbitMQ) is running"]),
        "workers": {"active_workers": [], "worker_count": 0}, "queues": {}}
    result = run("health")
    assert (result.exit_code, result.stdout) == (2, (
        "UNHEALTHY: the broker cannot be reached: OSError: refused\nworkers: 0\nqueues: -\n"
        "-> Check that the broker (Redis/RabbitMQ) is running\n"))


def test_health_options_reach_the_cluster() -> None:
    """--timeout, --discovery-timeout and --queue-threshold reach the client, closed after."""
    run("health", "--timeout", "2.5", "--discovery-timeout", "0.5", "--queue-threshold", "7")
    [cluster] = FakeCluster.made
    assert (cluster.options["timeout"], cluster.options["discovery_timeout"],
            cluster.options["use_cache"], cluster.queue_threshold, cluster.closed) == (
        2.5, 0.5, False, 7, True)


def test_health_json_is_the_verdict() -> None:
    """`observe health --json` prints the verdict as JSON, and still exits by its status."""
    result = run("health", "--json", "-v")
    assert (result.exit_code, json.loads(result.stdout)) == (1, DEGRADED)


@pytest.mark.parametrize("command", ["status", "workers", "tasks", "queues", "history"])
def test_unreachable_broker_is_an_error_exit_2(command: str) -> None:
    """A command whose broadcast cannot be sent prints "Error: ..." on stderr and exits 2."""
    FakeCluster.down = True
    result = run(command)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", (
        "Error: ConnectionRefusedError: [Errno 111] Connection refused "
        "(broker redis://localhost:6379/0)\n"))

