"""The cluster view: observe_* commands, the Cluster client and `celery observe` on real workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery import Celery

from celery_observe import Cluster, shapes
from celery_observe.testing import wait_until

from .workers import REPO, WorkerProcess

pytestmark = pytest.mark.broker


def observe_cli(broker: str, queue: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`celery -A tests.workerapp observe ...` as a user would run it."""
    env = {**os.environ, "CELERY_OBSERVE_TEST_BROKER": broker, "CELERY_OBSERVE_TEST_QUEUE": queue}
    return subprocess.run([sys.executable, "-m", "celery", "-A", "tests.workerapp", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_status_answers_with_every_worker_without_waiting(
        make_cluster: Callable[..., Cluster],
        client: Celery, two_workers: list[WorkerProcess]) -> None:
    """Once the workers are known, status returns on the last reply, not at the 30 s timeout."""
    # a quiet spell long enough for a worker's first reply on a loaded machine (CI once saw
    # the second worker answer more than 1 s after the first)
    cluster = make_cluster(timeout=30, discovery_timeout=10, use_cache=False)
    first = cluster.status()
    assert sorted(first["workers"]) == sorted(w.hostname for w in two_workers)
    started = time.monotonic()
    second = cluster.status()
    assert time.monotonic() - started < 10  # a missed early return would take 30 s
    assert second["workers_online"] == 2 and second["missing"] == []
    assert second["totals"]["concurrency"] == 4
    assert ":guest@" not in second["broker"]  # the password is masked


def test_health_degrades_then_fails_as_workers_stop(
        make_cluster: Callable[..., Cluster],
        broker: str, client: Celery, queue_name: str, two_workers: list[WorkerProcess]) -> None:
    """Healthy with both workers; degraded (exit 1) with one gone; unhealthy with none."""
    cluster = make_cluster(timeout=2, discovery_timeout=1, use_cache=False)
    verdict = cluster.health()
    assert verdict["status"] == "healthy", verdict
    two_workers[0].stop()
    verdict = cluster.health()
    assert verdict["status"] == "degraded"
    assert verdict["workers"]["active_workers"] == [two_workers[1].hostname]
    assert f"worker {two_workers[0].hostname} stopped answering" in verdict["message"]
    result = observe_cli(broker, queue_name, "observe", "health", "--json")
    assert result.returncode == 0, result.stderr  # a fresh client knows only the live worker
    two_workers[1].stop()
    verdict = cluster.health()
    assert verdict["status"] == "unhealthy"
    assert verdict["recommendations"][0].startswith("Start Celery workers: celery -A ")
    result = observe_cli(broker, queue_name, "observe", "health")
    assert result.returncode == 2 and "UNHEALTHY" in result.stdout


def test_worker_cache_counts_hits_and_misses_exactly(
        make_cluster: Callable[..., Cluster],
        client: Celery, two_workers: list[WorkerProcess]) -> None:
    """Two status queries within the TTL are one miss and one hit on each worker."""
    cluster = make_cluster(timeout=5, discovery_timeout=3, use_cache=False)
    replies, _ = cluster.ask("observe_status")
    assert [reply["cache"] for reply in replies.values()] == ["MISS", "MISS"]
    replies, _ = cluster.ask("observe_status")
    assert [reply["cache"] for reply in replies.values()] == ["HIT", "HIT"]
    stats, _ = cluster.ask("observe_cache_stats")
    for reply in stats.values():
        worker_status = reply["data"]["caches"]["worker_status"]
        assert (worker_status["hits"], worker_status["misses"]) == (1, 1)
    invalidated, _ = cluster.ask("observe_cache_invalidate", cache_name="worker_status")
    assert {reply["cache_name"] for reply in invalidated.values()} == {"worker_status"}
    replies, _ = cluster.ask("observe_status")
    assert [reply["cache"] for reply in replies.values()] == ["MISS", "MISS"]


def test_concurrent_identical_queries_share_one_broadcast(
        make_cluster: Callable[..., Cluster],
        client: Celery, two_workers: list[WorkerProcess]) -> None:
    """Eight threads asking for status at once cause a single broadcast."""
    cluster = make_cluster(timeout=5)
    cluster.status()  # learn the workers
    cluster.caches.invalidate()
    before = cluster.broadcasts
    barrier = threading.Barrier(8)
    results = []

    def ask() -> None:
        barrier.wait()
        results.append(cluster.status())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8 and cluster.broadcasts - before == 1


def test_bad_arguments_get_an_error_reply(
        make_cluster: Callable[..., Cluster], client: Celery,
                                          two_workers: list[WorkerProcess]) -> None:
    """Wrong types and huge limits are answered with an error; the workers carry on."""
    cluster = make_cluster(timeout=5, use_cache=False)
    for arguments in ({"limit": -5}, {"limit": 10**9}, {"limit": "many"},
                      {"limit": 5, "unknown": 1}):
        replies, _ = cluster.ask("observe_history", **arguments)
        assert len(replies) == 2
        assert all("error" in reply for reply in replies.values()), replies
    replies, _ = cluster.ask("observe_cache_invalidate", cache_name="no_such_cache")
    assert len(replies) == 2
    assert all("task_status" in reply["error"] for reply in replies.values()), replies
    assert cluster.health()["status"] == "healthy"


def test_history_and_tasks_merge_all_workers(
        make_cluster: Callable[..., Cluster], client: Celery, queue_name: str,
                                             two_workers: list[WorkerProcess]) -> None:
    """History lists finished tasks of every worker; arguments are redacted by default."""
    for n in range(6):
        client.send_task("tests.workerapp.add", (n, 7319041), queue=queue_name)
    cluster = make_cluster(timeout=5, use_cache=False)
    wait_until(lambda: len(cluster.history(50)["tasks"]) == 6, 20, "6 finished tasks")
    history = cluster.history(50)["tasks"]
    assert {entry["state"] for entry in history} == {"success"}
    assert [entry["ended"] for entry in history] == sorted(
        (entry["ended"] for entry in history), reverse=True)
    client.send_task("tests.workerapp.sleep", (5,), queue=queue_name, countdown=60)
    scheduled = wait_until(lambda: cluster.tasks()["scheduled"], 20, "a scheduled task")
    assert "7319041" not in json.dumps(cluster.tasks()) and scheduled[0]["args"].startswith(
        "<redacted")


def test_inspect_observe_status_needs_no_code_in_the_app(
        broker: str, queue_name: str, two_workers: list[WorkerProcess]) -> None:
    """`celery -A app inspect observe_status` works for an app that never imports us."""
    result = observe_cli(broker, queue_name, "inspect", "observe_status", "--json")
    assert result.returncode == 0, result.stderr
    replies = json.loads(result.stdout)
    assert sorted(replies) == sorted(w.hostname for w in two_workers)


def test_cli_commands_show_the_workers(broker: str, queue_name: str,
                                       two_workers: list[WorkerProcess]) -> None:
    """Each `celery observe` command exits 0 and prints a table, or JSON with --json."""
    for command in (("status",), ("workers",), ("tasks",), ("queues",), ("history", "-n", "5"),
                    ("top", "--iterations", "1")):
        result = observe_cli(broker, queue_name, "observe", *command)
        assert result.returncode == 0, result.stderr
        if command[0] in ("status", "workers", "top"):
            assert all(worker.hostname in result.stdout for worker in two_workers), result.stdout
        if command[0] != "top":
            as_json = observe_cli(broker, queue_name, "observe", *command, "--json")
            assert as_json.returncode == 0 and json.loads(as_json.stdout)


def broker_leftovers(broker: str, exchange: str) -> dict[str, Any]:
    """What a client could leave in the broker: Redis keys and binding sets, or AMQP queues.

    Only what belongs to the test's remote-control ``exchange`` (every key naming it, and
    each binding set's and deadline's members naming it): other suites may share the server.
    """
    if broker.startswith("redis"):
        server = redis.Redis.from_url(broker)
        try:
            state: dict[str, Any] = {}
            for key in sorted(server.keys()):
                kind = server.type(key)
                # Sets and sorted sets by member; a binding deadline's score moves on.
                members = (server.smembers(key) if kind == b"set" else
                           server.zrange(key, 0, -1) if kind == b"zset" else [])
                ours = sorted(m for m in members if exchange.encode() in m)
                if exchange in key.decode() or ours:
                    state[key.decode()] = ours or kind.decode()
            return state
        finally:
            server.close()
    listing = subprocess.run(["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    return {"queues": sorted(name for name in listing.split() if f".reply.{exchange}." in name)}


CLIENT_PROCESS = """
from celery_observe import Cluster
from tests.workerapp import app
with Cluster(app, timeout=5, discovery_timeout=0.5) as cluster:
    print(cluster.status()["workers_online"])
"""


@pytest.mark.timeout(300)
def test_clients_leave_nothing_in_the_broker(
        make_cluster: Callable[..., Cluster], broker: str, client: Celery, queue_name: str,
        two_workers: list[WorkerProcess]) -> None:
    """50 client processes and 50 in-process clients leave the broker as they found it."""
    if broker.startswith("amqp") and shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed")
    make_cluster(timeout=5).status()  # the exchanges exist before the snapshot
    before = broker_leftovers(broker, queue_name)
    env = {**os.environ, "CELERY_OBSERVE_TEST_BROKER": broker,
           "CELERY_OBSERVE_TEST_QUEUE": queue_name}
    for batch in range(10):
        processes = [subprocess.Popen([sys.executable, "-c", CLIENT_PROCESS], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, text=True) for _ in range(5)]
        outputs = [process.communicate(timeout=60)[0].strip() for process in processes]
        assert outputs == ["2"] * 5, f"batch {batch}: {outputs}"
    for _ in range(50):
        cluster = make_cluster(timeout=5, discovery_timeout=0.5)
        assert cluster.status()["workers_online"] == 2
        cluster.close()
    assert broker_leftovers(broker, queue_name) == before


def test_every_broadcast_hears_every_worker(
        make_cluster: Callable[..., Cluster], client: Celery,
        two_workers: list[WorkerProcess]) -> None:
    """A new client's first broadcast, and each later one, gets the reply of every worker."""
    hostnames = sorted(worker.hostname for worker in two_workers)
    for _ in range(20):  # the first replies of a new client had no queue to land in
        replies, _ = make_cluster(timeout=5, discovery_timeout=2).ask("observe_health")
        assert sorted(replies) == hostnames
    cluster = make_cluster(timeout=5)
    cluster.ask("observe_health")
    for _ in range(30):  # each collection deletes the reply queue; the next must redeclare it
        replies, missing = cluster.ask("observe_health", use_cache=False)
        assert (sorted(replies), missing) == (hostnames, [])


def test_a_queue_no_worker_consumes_is_reported_and_degrades_health(
        make_cluster: Callable[..., Cluster], broker: str, client: Celery, queue_name: str,
        two_workers: list[WorkerProcess]) -> None:
    """Tasks routed to a queue nobody consumes: listed with no consumer, and health degraded."""
    orphan = f"{queue_name}-orphan"  # the client fixture removes it from Redis afterwards
    client.conf.task_routes = {"tests.workerapp.add": {"queue": orphan}}
    try:
        for _ in range(7):
            client.send_task("tests.workerapp.add", (1, 2))
        cluster = make_cluster(timeout=5, discovery_timeout=1, use_cache=False)
        queues = cluster.queues()["queues"]
        assert (queues[orphan]["length"], queues[orphan]["consumers"],
                queues[orphan]["unconsumed"]) == (7, [], True)
        consumed = queues[queue_name]
        assert (consumed["length"], consumed["consumers"], consumed["unconsumed"]) == (
            0, sorted(worker.hostname for worker in two_workers), False)
        verdict = cluster.health()
        assert verdict["status"] == "degraded"
        assert verdict["message"] == f"queue {orphan!r} holds 7 tasks and no worker consumes it"
        assert verdict["queues"][orphan] == 7 and verdict["unconsumed_queues"] == [orphan]
        assert verdict["recommendations"] == [
            f"Start a worker that consumes {orphan!r}: celery -A client worker --observe "
            f"--loglevel=info -Q {orphan}"]
        listing = observe_cli(broker, queue_name, "observe", "queues", "-Q", orphan)
        assert listing.returncode == 0, listing.stderr
        row = next(line for line in listing.stdout.splitlines() if line.startswith(orphan))
        assert row.split()[:2] == [orphan, "7"]
        assert row.endswith(f"NONE: start a worker with -Q {orphan}")
        health = observe_cli(broker, queue_name, "observe", "health", "-Q", orphan)
        assert health.returncode == 1 and health.stdout.startswith("DEGRADED"), health.stdout
    finally:
        if broker.startswith("amqp"):
            with client.connection_for_write() as connection:
                connection.default_channel.queue_delete(orphan)


def conforms(value: Any, shape: Any, where: str = "answer") -> list[str]:
    """Where ``value`` differs from ``shape`` (a TypedDict, or a list/dict of them): the keys
    each TypedDict must and may have, checked all the way down."""
    origin = typing.get_origin(shape)
    if typing.is_typeddict(shape):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not a dict"]
        required, optional = shape.__required_keys__, shape.__optional_keys__
        problems = [f"{where}: missing {sorted(required - set(value))}"] if required - set(
            value) else []
        problems += [f"{where}: unexpected {sorted(set(value) - required - optional)}"] if set(
            value) - required - optional else []
        hints = typing.get_type_hints(shape)
        for key in set(value) & set(hints):
            problems += conforms(value[key], hints[key], f"{where}.{key}")
        return problems
    if origin is list and isinstance(value, list):
        return [p for n, item in enumerate(value)
                for p in conforms(item, typing.get_args(shape)[0], f"{where}[{n}]")]
    if origin is dict and isinstance(value, dict):
        return [p for key, item in value.items()
                for p in conforms(item, typing.get_args(shape)[1], f"{where}[{key!r}]")]
    return []


def test_answers_have_the_typed_shapes(
        make_cluster: Callable[..., Cluster], client: Celery, queue_name: str,
        two_workers: list[WorkerProcess]) -> None:
    """Every Cluster answer and every worker reply has exactly the keys shapes.py declares."""
    client.send_task("tests.workerapp.add", (1, 2), queue=queue_name)
    client.send_task("tests.workerapp.sleep", (5,), queue=queue_name, countdown=60)
    cluster = make_cluster(timeout=5, discovery_timeout=1, use_cache=False)
    wait_until(lambda: cluster.history(5)["tasks"] and cluster.tasks()["scheduled"], 20,
               "a finished and a scheduled task")
    for answer, shape in ((cluster.status(), shapes.ClusterStatus),
                          (cluster.health(), shapes.ClusterHealth),
                          (cluster.tasks(), shapes.ClusterTasks),
                          (cluster.history(5), shapes.ClusterHistory),
                          (cluster.summary(), shapes.ClusterSummary),
                          (cluster.queues(), shapes.ClusterQueues)):
        assert conforms(answer, shape, shape.__name__) == []
    for command, shape in shapes.COMMAND_DATA.items():
        replies, _ = cluster.ask(command)
        assert len(replies) == 2
        for hostname, reply in replies.items():
            assert conforms(reply["data"], shape, f"{command} of {hostname}") == []


def test_history_search_and_summary_from_the_command_line(
        make_cluster: Callable[..., Cluster], broker: str, client: Celery, queue_name: str,
        two_workers: list[WorkerProcess]) -> None:
    """Workers search their own history; `observe history` and `observe summary` show it."""
    ids = [client.send_task("tests.workerapp.add", (n, n), queue=queue_name).id for n in range(3)]
    for _ in range(2):
        client.send_task("tests.workerapp.boom", queue=queue_name)
    cluster = make_cluster(timeout=5, discovery_timeout=1, use_cache=False)
    wait_until(lambda: len(cluster.history(50)["tasks"]) == 5, 30, "5 finished tasks")
    failures = cluster.history(50, task="tests.workerapp.b*")["tasks"]
    assert [(t["name"], t["state"]) for t in failures] == [("tests.workerapp.boom", "failure")] * 2
    assert {t["id"] for t in cluster.history(50, state="success")["tasks"]} == set(ids)
    assert [t["id"] for t in cluster.history(50, id_prefix=ids[1])["tasks"]] == [ids[1]]
    assert cluster.history(50, since=time.time() + 60)["tasks"] == []
    replies, _ = cluster.ask("observe_history", state="lost")
    assert [reply["error"] for reply in replies.values()] == [
        "observe_history: state must be one of success, failure, retry, revoked, rejected, "
        "not 'lost'"] * 2
    result = observe_cli(broker, queue_name, "observe", "history", "--state", "failure",
                         "--last", "600", "--json")
    assert result.returncode == 0, result.stderr
    assert [t["name"] for t in json.loads(result.stdout)["tasks"]] == ["tests.workerapp.boom"] * 2
    result = observe_cli(broker, queue_name, "observe", "summary")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    counts = {}
    for row in rows:  # WORKER TASK SUCCESS FAILURE RETRY REVOKED REJECTED SUCCESS% P50 P95 P99
        success, failure = counts.get(row[1], (0, 0))
        counts[row[1]] = (success + int(row[2]), failure + int(row[3]))
    assert counts == {"tests.workerapp.add": (3, 0), "tests.workerapp.boom": (0, 2)}
    bad = observe_cli(broker, queue_name, "observe", "history", "--state", "lost")
    assert bad.returncode == 2 and "Invalid value for '--state'" in bad.stderr
