"""The opt-in shared cache in Redis: N replicas of the API cause one broadcast per TTL, not N.

The lock/wait rule is tested row by row; the shared layer itself against a redis-server of
the test's own (no Celery); and the whole against two real `celery -A tests.workerapp observe
serve` processes in front of two observed workers on Redis, sharing a password-protected
redis-server the test kills. Broadcasts are counted where they happen: each is one PUBLISH to
the control exchange's channel on the broker, which the test subscribes to.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from celery_observe.cluster.api import ApiSettings
from celery_observe.cluster.api.caching import Rendered, ResponseCache, render
from celery_observe.cluster.api.shared_cache import (
    PREFIX,
    RETRY_SECONDS,
    SharedCache,
    Step,
    check_url,
    decode,
    next_step,
)
from celery_observe.testing import end_process, free_port, parse_metrics, wait_until

from .conftest import answering_workers, broker_url, running
from .servers import PrivateRedis
from .test_serve import PREFIX as API
from .test_serve import TOKEN, ServeProcess
from .workers import REPO, WorkerProcess

WORKERS = f"{API}/workers/status"
#: The worker-status cache's TTL (the caching seed's 5 s).
TTL = 5.0
PASSWORD = "shared-cache-secret-" + "p" * 12
ANSWER = render(200, {"answer": 42})


# --- the lock/wait rule ---------------------------------------------------------------------

@pytest.mark.parametrize(("found", "locked", "waited", "step"), [
    (True, False, 0.0, Step.USE),
    (True, False, 9.0, Step.USE),
    (False, True, 0.0, Step.COMPUTE),
    (False, True, 9.0, Step.COMPUTE),
    (False, False, 0.0, Step.WAIT),
    (False, False, 0.99, Step.WAIT),
    (False, False, 1.0, Step.GIVE_UP),
])
def test_the_lock_wait_rule(found: bool, locked: bool, waited: float, step: Step) -> None:
    """A stored answer is used; else the lock's holder computes; else wait up to ``wait`` s."""
    assert next_step(found, locked, waited, wait=1.0) is step


def test_a_url_of_another_scheme_is_refused_with_its_password_masked() -> None:
    """check_url: only redis://, rediss:// and unix:// URLs; the message shows no password."""
    with pytest.raises(ValueError, match="expected a redis://") as raised:
        check_url(f"http://user:{PASSWORD}@cache:6379/0")
    assert PASSWORD not in str(raised.value) and "user:**@cache" in str(raised.value)


# --- the shared layer on a redis-server of the test's own ----------------------------------

@pytest.fixture
def replica(private_redis: PrivateRedis) -> Iterator[Callable[..., SharedCache]]:
    """Makes SharedCache instances ("replicas") on the test's Redis; closes them afterwards."""
    made: list[SharedCache] = []

    def make(wait: float = 5.0) -> SharedCache:
        made.append(SharedCache(private_redis.url(), wait=wait))
        return made[-1]

    yield make
    for cache in made:
        cache.close()


def counted(answer: Rendered = ANSWER, hold: threading.Event | None = None,
            fail: bool = False) -> tuple[Callable[[], Rendered], list[float]]:
    """A computation that records when it ran, waiting for ``hold`` first if given."""
    calls: list[float] = []

    def compute() -> Rendered:
        calls.append(time.monotonic())
        if hold is not None:
            assert hold.wait(10)
        if fail:
            raise RuntimeError("the computation failed")
        return answer

    return compute, calls


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(call()))
    thread.start()
    return thread, results


def test_an_answer_one_replica_stored_is_read_by_another_with_its_age(
        replica: Callable[..., SharedCache]) -> None:
    """The second replica gets the first one's status, ETag and body, and the age since stored."""
    first, second = replica(), replica()
    compute, calls = counted()
    assert first.get_or_compute("worker_status", "workers", compute, TTL) == (ANSWER, None)
    stored = time.time()
    before = time.time()
    rendered, age = second.get_or_compute("worker_status", "workers", compute, TTL) or (None, 0)
    after = time.time()
    assert rendered == ANSWER and len(calls) == 1
    assert age is not None and before - stored <= age + 0.01 and age <= after - stored + 0.01


def test_concurrent_misses_on_two_replicas_compute_once(
        replica: Callable[..., SharedCache]) -> None:
    """Eight requests on two replicas at once: one computes, seven wait and get its answer."""
    caches = [replica(), replica()]
    hold = threading.Event()
    compute, calls = counted(hold=hold)
    threads = [in_thread(lambda n=n: caches[n % 2].get_or_compute(
        "worker_status", "workers", compute, TTL)) for n in range(8)]
    wait_until(lambda: calls, 10, "one replica to compute")
    wait_until(lambda: sum(c.stats()["caches"]["worker_status"]["waits"] for c in caches) == 7,
               10, "the other seven to wait")
    hold.set()
    for thread, _ in threads:
        thread.join(10)
    answers = [results[0] for _, results in threads]
    assert len(calls) == 1
    assert sorted(age is None for _, age in answers) == [False] * 7 + [True]
    assert {rendered for rendered, _ in answers} == {ANSWER}


def test_a_waiting_replica_computes_itself_within_the_wait(
        replica: Callable[..., SharedCache]) -> None:
    """A lock's holder slower than ``wait``: the waiter computes within ``wait`` s, and the
    slow holder, its lock gone, does not overwrite the waiter's answer."""
    first, second, third = replica(wait=0.3), replica(wait=0.3), replica(wait=0.3)
    hold = threading.Event()
    slow, slow_calls = counted(hold=hold)
    thread, results = in_thread(lambda: first.get_or_compute("task_status", "tasks", slow, 2.0))
    wait_until(lambda: slow_calls, 10, "the first replica to compute")
    other = render(200, {"answer": "the waiter's own"})
    compute, calls = counted(other)
    try:
        started = time.monotonic()
        assert second.get_or_compute("task_status", "tasks", compute, 2.0) == (other, None)
        waited = time.monotonic() - started
    finally:
        hold.set()
        thread.join(10)
    assert len(calls) == 1 and waited < 0.3 + 0.7, waited
    assert second.stats()["caches"]["task_status"] == {
        "hits": 0, "misses": 1, "wait_timeouts": 1, "waits": 1}
    assert results == [(ANSWER, None)]
    rendered, age = third.get_or_compute("task_status", "tasks", counted()[0], 2.0) or (None, 0)
    assert rendered == other and age is not None


def test_a_failed_computation_frees_the_lock_at_once(
        replica: Callable[..., SharedCache]) -> None:
    """A computation that raises leaves no lock: the next replica computes without waiting."""
    first, second = replica(wait=5.0), replica(wait=5.0)
    failing, _ = counted(fail=True)
    with pytest.raises(RuntimeError, match="the computation failed"):
        first.get_or_compute("worker_status", "workers", failing, TTL)
    compute, calls = counted()
    started = time.monotonic()
    assert second.get_or_compute("worker_status", "workers", compute, TTL) == (ANSWER, None)
    assert len(calls) == 1 and time.monotonic() - started < 1.0
    assert second.stats()["caches"]["worker_status"]["waits"] == 0


def test_an_answer_expires_with_its_cache_ttl(
        replica: Callable[..., SharedCache], private_redis: PrivateRedis) -> None:
    """The stored answer's Redis TTL is the cache's TTL, and no lock is left behind."""
    replica().get_or_compute("health_check", "health", counted()[0], 10.0)
    client = redis.Redis.from_url(private_redis.url())
    try:
        assert 9000 < client.pttl(f"{PREFIX}:health_check:answer:health") <= 10000
        assert client.exists(f"{PREFIX}:health_check:lock:health") == 0
    finally:
        client.close()


def test_invalidate_deletes_one_cache_or_all(replica: Callable[..., SharedCache]) -> None:
    """invalidate(name) deletes that cache's answers only; invalidate() deletes every one."""
    first, second = replica(), replica()
    for name, key in (("worker_status", "workers"), ("worker_status", "status"),
                      ("task_status", "tasks")):
        first.get_or_compute(name, key, counted()[0], TTL)
    assert second.invalidate("worker_status") == 2
    compute, calls = counted()
    assert second.get_or_compute("task_status", "tasks", compute, TTL) is not None
    assert calls == []  # still stored
    assert second.invalidate() == 1


def test_an_answer_computed_before_an_invalidation_is_not_stored(
        replica: Callable[..., SharedCache]) -> None:
    """A computation under way when the cache is invalidated returns but does not store."""
    first, second = replica(), replica()
    hold = threading.Event()
    slow, slow_calls = counted(hold=hold)
    thread, results = in_thread(lambda: first.get_or_compute("queue_status", "queues", slow, 3.0))
    wait_until(lambda: slow_calls, 10, "the first replica to compute")
    assert second.invalidate("queue_status") == 0
    hold.set()
    thread.join(10)
    assert results == [(ANSWER, None)]
    compute, calls = counted()
    assert second.get_or_compute("queue_status", "queues", compute, 3.0) == (ANSWER, None)
    assert len(calls) == 1


def test_an_entry_of_another_format_counts_as_missing(
        replica: Callable[..., SharedCache], private_redis: PrivateRedis) -> None:
    """A value this version did not write is computed anew and replaced."""
    client = redis.Redis.from_url(private_redis.url())
    try:
        client.set(f"{PREFIX}:worker_status:answer:workers", b"2 whatever\nbody", px=5000)
        compute, calls = counted()
        assert replica().get_or_compute("worker_status", "workers", compute, TTL) == (
            ANSWER, None)
        assert len(calls) == 1
        assert decode(client.get(f"{PREFIX}:worker_status:answer:workers") or b"") is not None
    finally:
        client.close()


def test_a_stopped_redis_is_one_logged_fault_then_memory_until_the_retry(
        shared_redis: PrivateRedis, caplog: pytest.LogCaptureFixture) -> None:
    """Redis gone: None (the caller answers from memory), one fault logged with no password,
    and no further lookup for RETRY_SECONDS."""
    cache = SharedCache(shared_redis.url(), wait=1.0)
    try:
        assert cache.get_or_compute("worker_status", "workers", counted()[0], TTL) is not None
        shared_redis.kill()
        with caplog.at_level(logging.ERROR, logger="celery_observe"):
            compute, calls = counted()
            started = time.monotonic()
            for _ in range(3):
                assert cache.get_or_compute("worker_status", "workers", compute, TTL) is None
            assert cache.invalidate() == 0
            elapsed = time.monotonic() - started
    finally:
        cache.close()
    assert calls == [] and elapsed < RETRY_SECONDS
    stats = cache.stats()
    assert (stats["faults"], stats["available"]) == (2, False)  # the lookup and the invalidate
    logged = [r for r in caplog.records if "api_shared_cache failed" in r.getMessage()]
    assert len(logged) == 1
    assert PASSWORD not in caplog.text and PASSWORD not in json.dumps(stats)


def test_redis_is_asked_again_5_s_after_a_fault() -> None:
    """After a fault the replica answers from memory for RETRY_SECONDS (5 s), then asks again."""
    now = [100.0]
    cache = SharedCache(f"redis://127.0.0.1:{free_port()}/0", wait=1.0, clock=lambda: now[0])
    try:
        assert cache.get_or_compute("health_check", "health", counted()[0], 10.0) is None
        now[0] += 4.99
        assert (RETRY_SECONDS, cache.available) == (5.0, False)
        now[0] += 0.01
        assert cache.available
        assert cache.get_or_compute("health_check", "health", counted()[0], 10.0) is None
        assert cache.stats()["faults"] == 2
    finally:
        cache.close()


def test_the_api_closes_its_shared_cache_connections_at_shutdown(
        private_redis: PrivateRedis) -> None:
    """An app's lifespan ends with no connection of its own left open on the shared Redis."""
    from fastapi.testclient import TestClient

    from celery_observe.cluster.api import create_app

    app = Celery("shutdown", broker="memory://", set_as_current=False)
    web = create_app(app, ApiSettings(shared_cache_url=private_redis.url()))
    watcher = redis.Redis.from_url(private_redis.url())
    try:
        with TestClient(web) as client:
            assert client.get(f"{API}/cache/stats").status_code == 200
            assert client.get(f"{API}/workers/status?use_cache=true").status_code in (200, 503)
            assert len(watcher.client_list()) >= 2  # the app's connection and the watcher
        assert len(watcher.client_list()) == 1, watcher.client_list()
    finally:
        watcher.close()
        app.close()


def test_a_replica_waits_twice_the_timeout_for_another_ones_answer() -> None:
    """The wait (and the lock's life) is twice the longer of timeout and discovery_timeout."""
    for timeout, discovery, wait in ((3.0, 1.0, 6.0), (0.5, 2.0, 4.0)):
        responses = ResponseCache.for_settings(ApiSettings(
            timeout=timeout, discovery_timeout=discovery,
            shared_cache_url=f"redis://127.0.0.1:{free_port()}/0"))
        assert responses.shared is not None and responses.shared.wait == wait
        responses.shared.close()
    assert ResponseCache.for_settings(ApiSettings()).shared is None


# --- two `observe serve` replicas on one broker ---------------------------------------------

def lowered(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


class Replica(ServeProcess):
    """One `observe serve` process; its answers come with their headers."""

    def get(self, path: str, method: str = "GET",
            token: str | None = None) -> tuple[int, dict[str, str], Any]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                return response.status, lowered(response.headers), body
        except urllib.error.HTTPError as error:
            with error:
                return error.code, lowered(error.headers), error.read()


class Broadcasts:
    """Counts the broadcasts of one command on a Redis broker's control channel."""

    def __init__(self, broker: str, exchange: str) -> None:
        self.client = redis.Redis.from_url(broker)
        self.pubsub = self.client.pubsub()
        self.pattern = f"*{exchange}.pidbox*"
        self.sentinel = f"/sentinel.{exchange}.pidbox/{uuid.uuid4().hex}"
        self.pubsub.psubscribe(self.pattern)
        wait_until(lambda: self.pubsub.get_message(timeout=0.1), 10, "the subscription")
        self.seen: dict[str, int] = {}

    def count(self, command: str) -> int:
        """Broadcasts of ``command`` so far: everything published before a sentinel of ours."""
        self.client.publish(self.sentinel, b"sentinel")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=1)
            if message is None or message["type"] != "pmessage":
                continue
            if message["channel"].decode() == self.sentinel:
                return self.seen.get(command, 0)
            envelope = json.loads(message["data"])
            body = envelope["body"]
            if envelope["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            method = json.loads(body)["method"]
            self.seen[method] = self.seen.get(method, 0) + 1
        raise AssertionError("the sentinel never came back")

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture(scope="module")
def cluster_queue() -> str:
    """The queue and control exchange of this module's workers and replicas."""
    return f"observe-shared-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def redis_broker() -> str:
    return broker_url("redis")


@pytest.fixture(scope="module")
def workers(redis_broker: str, cluster_queue: str) -> Iterator[list[WorkerProcess]]:
    """Two observed workers on Redis, for every replica test of this module."""
    yield from answering_workers(redis_broker, cluster_queue)


@pytest.fixture
def shared_redis() -> Iterator[PrivateRedis]:
    """The replicas' shared cache: a password-protected redis-server the test may kill."""
    yield from running(PrivateRedis(password=PASSWORD))


@pytest.fixture
def broadcasts(redis_broker: str, cluster_queue: str) -> Iterator[Broadcasts]:
    counter = Broadcasts(redis_broker, cluster_queue)
    yield counter
    counter.close()


@pytest.fixture
def replicas(redis_broker: str, cluster_queue: str, workers: list[WorkerProcess],
             shared_redis: PrivateRedis, tmp_path: Path) -> Iterator[list[Replica]]:
    """Two `observe serve` processes sharing ``shared_redis``, with the token for invalidation."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    started = [Replica(redis_broker, cluster_queue, tmp_path / f"replica-{n}.log",
                       "--token-file", str(token_file),
                       "--shared-cache-url", shared_redis.url(3)) for n in (1, 2)]
    try:
        together([replica.start for replica in started])
        yield started
    finally:
        for replica in started:
            if replica.process is not None:
                end_process(replica.process, timeout=10)


def together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` in threads released at the same moment; their results in order (the
    first exception raised, if any, is raised here)."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        barrier.wait(10)
        try:
            results[n] = calls[n]()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    return results


def round_on_both(replicas: list[Replica], each: int = 2) -> list[tuple[int, dict[str, str], Any]]:
    """``each`` concurrent requests of workers/status on every replica at once."""
    return together([lambda r=r: r.get(WORKERS) for r in replicas for _ in range(each)])


@pytest.mark.broker
def test_many_requests_on_two_replicas_within_one_ttl_cause_one_broadcast(
        replicas: list[Replica], broadcasts: Broadcasts) -> None:
    """4 concurrent then 40 alternating requests on two replicas within 5 s: one broadcast."""
    started = time.monotonic()
    answers = round_on_both(replicas)
    answers += [replicas[n % 2].get(WORKERS) for n in range(40)]
    elapsed = time.monotonic() - started
    assert elapsed < TTL, elapsed  # else the TTL passed and the count says nothing
    assert [status for status, _, _ in answers] == [200] * 44
    assert sorted(headers["x-cache"] for _, headers, _ in answers) == ["HIT"] * 43 + ["MISS"]
    assert len({body for _, _, body in answers}) == 1
    assert broadcasts.count("observe_status") == 1


@pytest.mark.broker
def test_after_the_ttl_one_more_broadcast_happens_not_two(
        replicas: list[Replica], broadcasts: Broadcasts, shared_redis: PrivateRedis) -> None:
    """Once the stored answer expired, concurrent requests on both replicas broadcast once."""
    round_on_both(replicas)
    client = redis.Redis.from_url(shared_redis.url(3))
    try:
        wait_until(lambda: client.exists(f"{PREFIX}:worker_status:answer:workers") == 0,
                   TTL + 5, "the stored answer to expire")
    finally:
        client.close()
    answers = round_on_both(replicas)
    assert sorted(headers["x-cache"] for _, headers, _ in answers) == ["HIT"] * 3 + ["MISS"]
    assert broadcasts.count("observe_status") == 2


@pytest.mark.broker
def test_x_cache_age_on_the_other_replica_is_the_age_of_the_stored_answer(
        replicas: list[Replica], shared_redis: PrivateRedis) -> None:
    """The replica that did not compute shows the seconds since the other one stored it."""
    computing, other = replicas
    assert computing.get(WORKERS)[1]["x-cache"] == "MISS"
    client = redis.Redis.from_url(shared_redis.url(3))
    try:
        found = decode(client.get(f"{PREFIX}:worker_status:answer:workers") or b"")
    finally:
        client.close()
    assert found is not None
    stored_at = found[1]
    wait_until(lambda: time.time() - stored_at >= 1.0, 5, "the answer to be a second old")
    before = time.time()
    status, headers, _ = other.get(WORKERS)
    after = time.time()
    assert (status, headers["x-cache"]) == (200, "HIT")
    age = float(headers["x-cache-age"])
    assert 1.0 <= before - stored_at - 0.001 <= age <= after - stored_at + 0.001, (
        age, before - stored_at, after - stored_at)


@pytest.mark.broker
def test_invalidating_through_one_replica_empties_the_others_view(
        replicas: list[Replica], broadcasts: Broadcasts) -> None:
    """POST cache/invalidate on one replica: the other's next answer is computed afresh."""
    first, second = replicas
    assert first.get(WORKERS)[1]["x-cache"] == "MISS"
    assert second.get(WORKERS)[1]["x-cache"] == "HIT"
    status, _, body = first.get(f"{API}/cache/invalidate?cache_name=worker_status", "POST",
                                TOKEN)
    # The first replica's in-memory copy and the shared answer.
    assert (status, json.loads(body)["invalidated"]) == (200, 2)
    assert second.get(WORKERS)[1]["x-cache"] == "MISS"
    assert first.get(WORKERS)[1]["x-cache"] == "HIT"
    assert broadcasts.count("observe_status") == 2


@pytest.mark.broker
def test_with_the_shared_redis_stopped_both_replicas_answer_from_their_own_caches(
        replicas: list[Replica], shared_redis: PrivateRedis, broadcasts: Broadcasts) -> None:
    """Shared Redis killed: every answer is a 200 from memory; one fault each, no password."""
    computing, other = replicas
    assert computing.get(WORKERS)[1]["x-cache"] == "MISS"
    assert other.get(WORKERS)[1]["x-cache"] == "HIT"
    shared_redis.kill()
    answers = [(n, *replica.get(WORKERS)[:2]) for _ in range(3)
               for n, replica in enumerate(replicas)]
    assert [(n, status) for n, status, _ in answers] == [(0, 200), (1, 200)] * 3
    # The computing replica kept its answer in memory; the other computes once, then hits.
    assert [headers["x-cache"] for _, _, headers in answers] == [
        "HIT", "MISS", "HIT", "HIT", "HIT", "HIT"]
    assert broadcasts.count("observe_status") == 2
    for replica in replicas:
        metrics = parse_metrics(replica.get(f"{API}/metrics")[2].decode())
        assert metrics.value("celery_observe_internal_errors_total",
                             component="api_shared_cache") == 1
        assert metrics.value("celery_observe_api_shared_cache_up") == 0
        assert replica.terminate(10) == 0
        log = replica.log()
        assert log.count("api_shared_cache failed") == 1, log
        assert f":**@127.0.0.1:{shared_redis.port}/3" in log and PASSWORD not in log


def test_without_the_redis_client_serve_exits_2_with_the_install_command(
        tmp_path: Path) -> None:
    """A shared cache URL (from $CELERY_OBSERVE_SHARED_CACHE_URL, which `ps` does not show)
    with no redis package: exit 2 and the pip command."""
    stub = tmp_path / "redis"
    stub.mkdir()
    (stub / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'redis'\", name='redis')\n")
    path = os.pathsep.join(filter(None, [str(tmp_path), str(REPO), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.workerapp", "observe", "serve"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": path,
                       "CELERY_OBSERVE_SHARED_CACHE_URL": f"redis://:{PASSWORD}@127.0.0.1:6379/3"},
        capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "pip install 'celery-observe[redis]'" in result.stderr
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr
