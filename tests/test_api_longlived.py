"""The cluster API as a process that runs for weeks: workers die, join and come back, the
broker restarts, and memory stays where it was.

Each test runs one API instance (in this process) over real workers on a redis-server of
its own, so a killed worker's leftovers and a restarted broker touch no other test.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from celery import Celery
from fastapi import FastAPI
from fastapi.testclient import TestClient

from celery_observe.cluster.api import ApiSettings, create_app
from celery_observe.testing import wait_until

from .conftest import answering_workers
from .servers import PrivateRedis
from .workers import WorkerProcess

pytestmark = pytest.mark.broker
PREFIX = "/api/v1/celery"
TIMEOUT = 1.0
FORGET_AFTER = 4.0
FRESH = {"use_cache": "false"}


@pytest.fixture
def queue() -> str:
    """The test's queue, which also names its remote-control exchange."""
    return f"observe-longlived-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def workers(private_redis: PrivateRedis, queue: str) -> Iterator[list[WorkerProcess]]:
    """Two observed threads workers on the test's own redis-server."""
    yield from answering_workers(private_redis.url(), queue)


def api_app(broker: str, queue: str) -> FastAPI:
    """The API with a short timeout and forget_after, and no rate limit in the way."""
    client = Celery("longlived", broker=broker, set_as_current=False)
    client.conf.control_exchange = queue
    client.conf.broker_connection_retry_on_startup = True
    return create_app(client, ApiSettings(timeout=TIMEOUT, discovery_timeout=0.5,
                                          forget_after=FORGET_AFTER,
                                          rate_limit_per_minute=100_000))


def listed(http: TestClient) -> list[tuple[str, str]]:
    """(name, status) of each worker an uncached ``/workers/status`` lists."""
    body = http.get(f"{PREFIX}/workers/status", params=FRESH).json()
    return [(worker["name"], worker["status"]) for worker in body["workers"]]


def test_a_killed_worker_is_missing_within_one_timeout_then_forgotten(
        private_redis: PrivateRedis, queue: str, workers: list[WorkerProcess]) -> None:
    """SIGKILL: the next uncached call says missing, at once on Redis, whose count of
    listeners drops with the killed worker's connection (a silent worker costs one
    timeout); after forget_after the worker is no longer listed."""
    killed, alive = workers
    with TestClient(api_app(private_redis.url(), queue)) as http:
        assert listed(http) == sorted([(killed.hostname, "online"),
                                       (alive.hostname, "online")])
        assert killed.stop(signal.SIGKILL) == -signal.SIGKILL
        started = time.monotonic()
        assert listed(http) == [(alive.hostname, "online"), (killed.hostname, "missing")]
        assert time.monotonic() - started < TIMEOUT + 1.5
        wait_until(lambda: listed(http) == [(alive.hostname, "online")],
                   FORGET_AFTER + 2 * TIMEOUT + 5, "the killed worker to be forgotten")


def test_a_new_worker_appears_on_the_next_uncached_call(
        private_redis: PrivateRedis, queue: str, workers: list[WorkerProcess]) -> None:
    """A worker that joins under a new name is listed by the first uncached call after it
    answers remote control."""
    names = sorted(worker.hostname for worker in workers)
    with TestClient(api_app(private_redis.url(), queue)) as http:
        assert listed(http) == [(name, "online") for name in names]
        newcomer = WorkerProcess(private_redis.url(), queue, pool="threads", concurrency=1,
                                 name=f"{queue}-new")
        try:
            newcomer.start()
            probe = Celery("probe", broker=private_redis.url(), set_as_current=False)
            probe.conf.control_exchange = queue
            try:
                wait_until(lambda: newcomer.hostname in {
                    name for reply in probe.control.ping(timeout=0.5) for name in reply},
                    20, "the new worker to answer pings")
            finally:
                probe.close()
            assert listed(http) == [(name, "online")
                                    for name in sorted([*names, newcomer.hostname])]
        finally:
            newcomer.stop()


def test_a_broker_restart_is_an_answer_then_recovers(
        private_redis: PrivateRedis, queue: str, workers: list[WorkerProcess]) -> None:
    """Broker down: /status 200 connected false with the error, /health 503, the listings
    503, never a 500; broker back: connected true again, same API instance."""
    names = sorted(worker.hostname for worker in workers)
    with TestClient(api_app(private_redis.url(), queue)) as http:
        assert http.get(f"{PREFIX}/status", params=FRESH).json()["connected"] is True
        private_redis.kill()
        status = http.get(f"{PREFIX}/status", params=FRESH)
        assert status.status_code == 200
        body = status.json()
        assert (body["connected"], str(private_redis.port) in body["error"]) == (False, True)
        assert http.get(f"{PREFIX}/health", params=FRESH).status_code == 503
        for path in ("/workers/status", "/tasks/status", "/queues/status", "/stats",
                     "/metrics/summary", "/prometheus/targets", "/tasks"):
            down = http.get(f"{PREFIX}{path}", params=FRESH)
            assert (down.status_code, down.json()["connected"]) == (503, False), path
        assert http.get(f"{PREFIX}/metrics").status_code == 200
        private_redis.start()

        def recovered() -> bool:
            body = http.get(f"{PREFIX}/status", params=FRESH).json()
            return body["connected"] and body["workers"] == names

        wait_until(recovered, 40, "the API to see both workers through the new broker",
                   interval=0.5)
        assert http.get(f"{PREFIX}/health", params=FRESH).status_code == 200


#: What the memory test asks, in turn: cached reads of every kind, a 404 and a 422.
MIXED = [("/workers/status", b""), ("/health", b""), ("/tasks/status", b""),
         ("/queues/status", b""), ("/stats", b""), ("/metrics/summary", b""), ("/status", b""),
         ("/prometheus/targets", b""), ("/cache/stats", b""), ("/tasks", b"limit=5"),
         ("/tasks/no-such-task/status", b""), ("/tasks", b"limit=0")]


async def drive(web: FastAPI, requests: int) -> dict[int, int]:
    """Send ``requests`` requests straight to the ASGI app (no HTTP client in between, which
    would cost more than the app); returns how many got each status."""
    statuses: dict[int, int] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    for n in range(requests):
        path, query = MIXED[n % len(MIXED)]
        await web({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                   "method": "GET", "scheme": "http", "path": PREFIX + path,
                   "raw_path": (PREFIX + path).encode(), "root_path": "", "query_string": query,
                   "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 50000),
                   "server": ("testserver", 80)}, receive, send)
    return statuses


def test_memory_stays_flat_over_100000_requests(
        private_redis: PrivateRedis, queue: str, workers: list[WorkerProcess]) -> None:
    """After 10,000 mixed requests, 90,000 more grow this process's RSS by under 2 MB and
    its live objects by under 1,000."""
    web = api_app(private_redis.url(), queue)
    process = psutil.Process()

    def measure() -> tuple[int, int]:
        gc.collect()
        return process.memory_info().rss, len(gc.get_objects())

    with TestClient(web):  # the lifespan: the API closes its connections afterwards
        asyncio.run(drive(web, 10_000))
        rss, objects = measure()
        statuses = asyncio.run(drive(web, 90_000))
        grown_rss, grown_objects = measure()
    assert statuses == {200: 75_000, 404: 7_500, 422: 7_500}
    # One object kept per request (a cache key, a label child) would be 90,000 objects and
    # several MB. Measured: the same number of objects, and RSS up ~1 MiB, most of it in the
    # first 20,000 requests (malloc arenas of the threadpool), then ~10 KiB per 10,000.
    figures = (f"RSS {rss / 2**20:.1f} -> {grown_rss / 2**20:.1f} MiB, "
               f"objects {objects} -> {grown_objects}")
    assert grown_objects - objects < 1_000, figures
    assert grown_rss - rss < 2 * 2**20, figures
