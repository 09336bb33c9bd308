"""Real brokers for the tests, and the rule for when they are missing.

Broker tests talk to the Redis and RabbitMQ servers on 127.0.0.1. Without them a test
skips with the reason, unless CELERY_OBSERVE_REQUIRE_BROKERS=1 (as on CI), where a
missing broker fails the test instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from kombu import pools
from kombu.exceptions import OperationalError

from celery_observe import Cluster, stamp_publish_times
from celery_observe.testing import listening, wait_until

from .servers import PrivateRedis
from .workers import WorkerProcess

BROKERS = {
    "redis": ("127.0.0.1", 6379, "redis://127.0.0.1:6379/{db}"),
    "rabbitmq": ("127.0.0.1", 5672, "amqp://guest:guest@127.0.0.1:5672//"),
}


def broker_url(name: str, db: int = 11) -> str:
    """The URL of a real broker, or skip (fail on CI) when it is not running."""
    host, port, template = BROKERS[name]
    if not listening(host, port, timeout=1.0):
        reason = f"{name} is not running on {host}:{port}"
        if os.environ.get("CELERY_OBSERVE_REQUIRE_BROKERS") == "1":
            pytest.fail(f"{reason}, and CELERY_OBSERVE_REQUIRE_BROKERS=1 forbids skipping")
        pytest.skip(reason)
    return template.format(db=db)


@pytest.fixture(autouse=True)
def no_publish_stamps() -> Iterator[None]:
    """Each test starts with this process not stamping publish times (install() turns it on)."""
    stamp_publish_times(False)
    yield
    stamp_publish_times(False)


@pytest.fixture(autouse=True)
def no_pooled_connections() -> Iterator[None]:
    """Each test starts with no broker connection an earlier test left in kombu's pools.

    Every Celery app of a process shares kombu's global pool for its broker URL
    (``app.close()`` does not empty it), so ``app.control`` in one test could get a
    connection another test left half-used minutes earlier: on CI, RabbitMQ had reset one
    and a Redis one still counted a BRPOP sent 65 s before, and ``add_consumer`` failed.
    """
    yield
    for group in (pools.producers, pools.connections):  # producers hold connections
        for pool in list(group.values()):
            pool.force_close_all(close_pool=False)
            pool.setup()  # a blocking acquire waits for these placeholders, never adds one


@pytest.fixture(params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> str:
    """Each real broker in turn."""
    return broker_url(request.param)


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A queue no other test uses, so leftovers of one test never reach another."""
    yield f"observe-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(broker: str, queue_name: str) -> Iterator[Celery]:
    """A producer app on ``broker``; deletes the test's queue afterwards."""
    app = Celery("client", broker=broker, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    app.conf.control_exchange = queue_name  # as tests/workerapp.py does for its workers
    yield app
    with app.connection_for_write() as connection, contextlib.suppress(Exception):
        channel = connection.default_channel
        if broker.startswith("redis"):  # kombu's queue_delete only unbinds on Redis
            channel.client.delete(*channel.client.keys(f"{queue_name}*") or [queue_name])
        else:
            channel.queue_delete(queue_name)
    app.close()


def running(redis: PrivateRedis) -> Iterator[PrivateRedis]:
    """Start ``redis`` for a fixture; kill it and remove its files afterwards."""
    broker_url("redis")  # skips (or fails on CI) like every broker test
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis.start()
    try:
        yield redis
    finally:
        redis.kill()
        shutil.rmtree(redis.directory, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A started redis-server of the test's own (no password, nothing on disk)."""
    yield from running(PrivateRedis())


def answering_workers(broker: str, queue: str, env: dict[str, str] | None = None,
                      pool: str = "threads", stop_signal: int = signal.SIGTERM,
                      ) -> Iterator[list[WorkerProcess]]:
    """Two observed workers (threads, -c 2) on ``queue`` for a fixture, once both answer
    remote control; stopped afterwards with ``stop_signal`` (SIGQUIT: without waiting for
    their tasks).

    Ready for tasks is not yet subscribed to broadcasts, so it waits until both answer a
    ping, from an app of its own (kombu's Redis transport delays the broadcast that follows
    a timed-out collection on the same connection by that timeout).
    """
    workers = [WorkerProcess(broker, queue, pool=pool, concurrency=2,
                             name=f"{queue}-{n}", env=env) for n in (1, 2)]
    try:
        for worker in workers:
            worker.start()
        probe = Celery("probe", broker=broker, set_as_current=False)
        probe.conf.control_exchange = queue

        def both_answer() -> bool:
            try:
                return len(probe.control.ping(timeout=0.5)) == 2
            except (OSError, OperationalError):  # a reset probe connection: ask again
                return False

        try:
            wait_until(both_answer, 20, "both workers to answer pings")
        finally:
            probe.close()
        yield workers
    finally:
        for worker in workers:
            worker.stop(stop_signal)


@pytest.fixture
def two_workers(broker: str, queue_name: str) -> Iterator[list[WorkerProcess]]:
    """Two observed workers, both listening to remote control."""
    yield from answering_workers(broker, queue_name)


@pytest.fixture
def make_cluster(client: Celery) -> Iterator[Callable[..., Cluster]]:
    """Cluster clients on the test's broker, closed afterwards."""
    made: list[Cluster] = []

    def make(**options: Any) -> Cluster:
        made.append(Cluster(client, **options))
        return made[-1]

    yield make
    for cluster in made:
        cluster.close()
