"""A client that knows no workers yet: how it learns when every worker has answered.

On Redis the broker counts the listeners of a broadcast; on RabbitMQ a command line starts
from the hint of its last call. Either way a fresh client must answer on the last reply,
not at its discovery timeout, and must never lose a worker. Each test gives the client a
timeout far above its deadline, so a missed early return fails it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from celery_observe import Cluster
from celery_observe.cluster.hints import WorkerHints

from .test_cluster import observe_cli
from .workers import WorkerProcess

pytestmark = pytest.mark.broker

#: The client waits this long for replies it cannot account for; the tests end far sooner.
NEVER = 300.0
DEADLINE = 60.0


def answered_quickly(call: Callable[[], Any]) -> Any:
    """``call()``'s result; fails if it ran past the deadline (it would wait ``NEVER``)."""
    started = time.monotonic()
    result = call()
    assert time.monotonic() - started < DEADLINE, "the client waited for its timeout"
    return result


def hostnames(workers: list[WorkerProcess]) -> list[str]:
    return sorted(worker.hostname for worker in workers)


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_redis_a_fresh_client_returns_when_every_listener_replied(
        make_cluster: Callable[..., Cluster], two_workers: list[WorkerProcess]) -> None:
    for _ in range(5):  # each a new client that knows no worker
        cluster = make_cluster(use_cache=False, timeout=NEVER, discovery_timeout=NEVER)
        status = answered_quickly(cluster.status)
        assert sorted(status["workers"]) == hostnames(two_workers)
        assert status["missing"] == []


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_redis_nobody_listening_is_known_at_once(
        make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(use_cache=False, timeout=NEVER, discovery_timeout=NEVER)
    health = answered_quickly(cluster.health)
    assert health["status"] == "unhealthy" and health["details"] == {}


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_redis_a_listener_that_never_replies_costs_one_quiet_spell(
        make_cluster: Callable[..., Cluster], client: Celery, queue_name: str,
        two_workers: list[WorkerProcess]) -> None:
    """A foreign subscriber to the pidbox topic (a debugging PSUBSCRIBE) is counted but
    never replies: a fresh client stops once no reply came for its discovery timeout, with
    every worker; once the workers are known, the expected-workers rule ends it."""
    with client.connection_for_write() as connection:
        topic = connection.default_channel._get_publish_topic(f"{queue_name}.pidbox", "")
    listener = redis.Redis.from_url(client.conf.broker_url).pubsub()
    listener.psubscribe(topic)
    try:
        cluster = make_cluster(use_cache=False, timeout=NEVER, discovery_timeout=1.0)
        for _ in range(3):
            status = answered_quickly(cluster.status)
            assert sorted(status["workers"]) == hostnames(two_workers)
    finally:
        listener.close()


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_rabbitmq_a_fresh_client_expects_the_hinted_workers_that_still_listen(
        make_cluster: Callable[..., Cluster], tmp_path: Path,
        two_workers: list[WorkerProcess]) -> None:
    hint = WorkerHints(tmp_path / "workers.json")
    hint.save([*hostnames(two_workers), "gone@nowhere"])
    cluster = make_cluster(use_cache=False, timeout=NEVER, discovery_timeout=NEVER,
                           hints=WorkerHints(hint.path))
    status = answered_quickly(cluster.status)
    assert sorted(status["workers"]) == hostnames(two_workers)
    assert status["missing"] == []  # the stopped worker of the hint is not expected
    assert json.loads(hint.path.read_text())["hostnames"] == hostnames(two_workers)


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_rabbitmq_a_worker_the_hint_does_not_name_is_found(
        make_cluster: Callable[..., Cluster], tmp_path: Path,
        two_workers: list[WorkerProcess]) -> None:
    """By the grace for newcomers in the first answer, or else in the next one."""
    hint = WorkerHints(tmp_path / "workers.json")
    hint.save([two_workers[0].hostname])
    cluster = make_cluster(use_cache=False, timeout=NEVER, discovery_timeout=NEVER,
                           hints=WorkerHints(hint.path))
    seen = set(answered_quickly(cluster.status)["workers"])
    seen |= set(answered_quickly(cluster.status)["workers"])
    assert sorted(seen) == hostnames(two_workers)
    assert json.loads(hint.path.read_text())["hostnames"] == hostnames(two_workers)


@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_rabbitmq_the_command_line_keeps_its_hint_between_calls(
        broker: str, queue_name: str, tmp_path: Path,
        two_workers: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def status(discovery_timeout: float) -> list[str]:
        result = observe_cli(broker, queue_name, "observe", "status", "--json",
                             "--timeout", str(NEVER), "--discovery-timeout", str(discovery_timeout))
        assert result.returncode == 0, result.stderr
        return sorted(json.loads(result.stdout)["workers"])

    assert status(discovery_timeout=2) == hostnames(two_workers)  # no hint yet: discovery
    [hint] = (tmp_path / "celery-observe").iterdir()
    assert json.loads(hint.read_text())["hostnames"] == hostnames(two_workers)
    assert answered_quickly(lambda: status(discovery_timeout=NEVER)) == hostnames(two_workers)
