"""The cluster HTTP API mounted in a user's FastAPI app, answering from real workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from fastapi import FastAPI
from fastapi.testclient import TestClient

from celery_observe.cluster.api import ApiSettings, observe_router
from celery_observe.cluster.api.task_results import RESULT_REDACTED
from celery_observe.testing import free_port, parse_metrics, wait_until

from .conftest import answering_workers, broker_url
from .workers import WorkerProcess

pytestmark = pytest.mark.broker
PREFIX = "/api/v1/celery"
TOKEN = "t0ken-of-the-test-suite-0123456789"


@pytest.fixture
def backend() -> str:
    """A Redis result backend for the workers and the API (whatever the broker)."""
    return broker_url("redis", db=12)


@pytest.fixture
def workers(broker: str, queue_name: str, backend: str) -> Iterator[list[WorkerProcess]]:
    """Two observed workers with a result backend, answering remote control."""
    yield from answering_workers(broker, queue_name, env={"CELERY_OBSERVE_TEST_BACKEND": backend})


def api_app(client: Celery, backend: str | None = None, **settings: Any) -> FastAPI:
    """The user's FastAPI app with the router mounted at the metrics guide's prefix."""
    if backend is not None:
        client.conf.result_backend = backend
    web = FastAPI()
    web.include_router(observe_router(client, ApiSettings(timeout=5, discovery_timeout=1,
                                                          **settings)), prefix=PREFIX)
    return web


def api(client: Celery, backend: str | None = None, **settings: Any) -> TestClient:
    """A test client of :func:`api_app`."""
    return TestClient(api_app(client, backend, **settings))


def test_read_endpoints_answer_from_every_worker(
        client: Celery, queue_name: str, backend: str, workers: list[WorkerProcess]) -> None:
    """Each read endpoint answers 200 with the seeds' bodies, naming both workers."""
    names = sorted(worker.hostname for worker in workers)
    with api(client, backend) as http:
        health = http.get(f"{PREFIX}/health").json()
        assert (health["status"], health["workers"]["active_workers"]) == ("healthy", names)
        listed = http.get(f"{PREFIX}/workers/status").json()
        assert [(w["name"], w["status"]) for w in listed["workers"]] == [
            (name, "online") for name in names]
        assert listed["workers"][0]["pool"] == {"max_concurrency": 2, "busy_workers": 0}
        queues = http.get(f"{PREFIX}/queues/status").json()["queues"]
        assert queues[queue_name]["consumers"] == names
        tasks = http.get(f"{PREFIX}/tasks/status").json()
        assert tasks["summary"] == {"active": 0, "reserved": 0, "scheduled": 0,
                                    "total_pending": 0}
        status = http.get(f"{PREFIX}/status").json()
        assert (status["connected"], status["workers"]) == (True, names)
        assert "tests.workerapp.add" not in status["registered_tasks"]  # the client's own app
        for path in ("/metrics/summary", "/stats", "/tasks", "/cache/stats"):
            assert http.get(f"{PREFIX}{path}").status_code == 200, path


def test_answers_are_cached_with_the_seeds_headers(
        client: Celery, workers: list[WorkerProcess]) -> None:
    """MISS then HIT with its age; use_cache=false is fresh; an unchanged ETag gets a 304."""
    with api(client) as http:
        first = http.get(f"{PREFIX}/workers/status")
        second = http.get(f"{PREFIX}/workers/status")
        assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
        assert "X-Cache-Age" not in first.headers and float(second.headers["X-Cache-Age"]) >= 0
        assert second.content == first.content
        fresh = http.get(f"{PREFIX}/workers/status", params={"use_cache": "false"})
        assert fresh.headers["X-Cache"] == "MISS"
        unchanged = http.get(f"{PREFIX}/workers/status",
                             headers={"If-None-Match": second.headers["ETag"]})
        assert (unchanged.status_code, unchanged.content) == (304, b"")
        stats = http.get(f"{PREFIX}/cache/stats").json()["caches"]["worker_status"]
        assert (stats["hits"], stats["misses"]) == (2, 1)


def test_concurrent_misses_share_one_broadcast(
        client: Celery, workers: list[WorkerProcess]) -> None:
    """Eight clients polling an uncached endpoint at once cost one computation: one miss."""
    with api(client) as http:
        barrier = threading.Barrier(8)
        codes: list[int] = []

        def poll() -> None:
            barrier.wait()
            codes.append(http.get(f"{PREFIX}/tasks/status").status_code)

        threads = [threading.Thread(target=poll) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert codes == [200] * 8
        stats = http.get(f"{PREFIX}/cache/stats").json()["caches"]["task_status"]
        assert (stats["misses"], stats["hits"]) == (1, 7)


def test_changing_endpoints_are_off_without_a_token_and_need_it(
        client: Celery, queue_name: str, backend: str, workers: list[WorkerProcess]) -> None:
    """No token configured: 403 naming the setting; configured: 401 without it, 202 with."""
    with api(client) as http:
        refused = http.post(f"{PREFIX}/tasks/some-id/revoke")
        assert refused.status_code == 403 and "ApiSettings(token=...)" in refused.json()["detail"]
        assert http.post(f"{PREFIX}/cache/invalidate").status_code == 403
    waiting = client.send_task("tests.workerapp.sleep", (5,), queue=queue_name, countdown=60)
    with api(client, backend, token=TOKEN) as http:
        assert http.post(f"{PREFIX}/tasks/{waiting.id}/revoke").status_code == 401
        wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}
        assert http.post(f"{PREFIX}/tasks/{waiting.id}/revoke", headers=wrong).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        revoked = http.post(f"{PREFIX}/tasks/{waiting.id}/revoke", headers=good)
        assert revoked.status_code == 202 and revoked.json() == {
            "task_id": waiting.id, "revoked": True, "terminate": False}
        revoked_on = client.control.inspect(timeout=2).revoked() or {}
        assert sorted(revoked_on) == sorted(worker.hostname for worker in workers)
        assert all(waiting.id in ids for ids in revoked_on.values())
        bad = http.post(f"{PREFIX}/cache/invalidate", params={"cache_name": "nope"}, headers=good)
        assert bad.status_code == 400 and "task_status, worker_status" in bad.json()["detail"]
        done = http.post(f"{PREFIX}/cache/invalidate", params={"cache_name": "task_status"},
                         headers=good)
        assert done.json()["cache_name"] == "task_status"


def test_task_status_from_the_backend(
        client: Celery, queue_name: str, backend: str, workers: list[WorkerProcess]) -> None:
    """A finished task shows its stored state (result redacted); unknown 404; bad id 400."""
    done = client.send_task("tests.workerapp.add", (2, 3), queue=queue_name)
    failed = client.send_task("tests.workerapp.boom", queue=queue_name)
    with api(client, backend) as http:
        body = wait_until(lambda: (b := http.get(f"{PREFIX}/tasks/{done.id}/status",
                                                 params={"use_cache": "false"}).json())
                          .get("ready") and b, 30, "the task's result")
        assert (body["state"], body["successful"], body["result"]) == (
            "SUCCESS", True, RESULT_REDACTED)
        assert body["worker"] in {worker.hostname for worker in workers}
        unknown = http.get(f"{PREFIX}/tasks/0f0f0f0f-0000-4000-8000-000000000000/status")
        assert unknown.status_code == 404
        assert http.get(f"{PREFIX}/tasks/..%2Fetc/status").status_code in (404, 422)
        assert http.get(f"{PREFIX}/tasks/{'x' * 300}/status").status_code == 422
    with api(client, backend, show_results=True) as http:
        body = wait_until(lambda: (b := http.get(f"{PREFIX}/tasks/{failed.id}/status",
                                                 params={"use_cache": "false"}).json())
                          .get("ready") and b, 30, "the failure")
        assert (body["state"], body["successful"]) == ("FAILURE", False)
        assert "ValueError('boom')" in body["result"] and "boom" in body["traceback"]


def test_a_broker_that_is_down_is_an_answer_not_a_500(client: Celery) -> None:
    """/status says connected false with the error; /health is 503 unhealthy."""
    down = Celery("down", broker=f"redis://:hunter2@127.0.0.1:{free_port()}/0",
                  set_as_current=False)
    with api(down) as http:
        status = http.get(f"{PREFIX}/status")
        assert status.status_code == 200 and status.json()["connected"] is False
        assert "hunter2" not in status.text
        health = http.get(f"{PREFIX}/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        assert "hunter2" not in health.text


def test_uncached_requests_are_rate_limited_per_client(
        client: Celery, workers: list[WorkerProcess]) -> None:
    """Beyond the limit an uncached request gets 429 with Retry-After; cached ones go on."""
    with api(client, rate_limit_per_minute=3) as http:
        codes = [http.get(f"{PREFIX}/stats", params={"use_cache": "false"}).status_code
                 for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = http.get(f"{PREFIX}/stats", params={"use_cache": "false"})
        assert int(limited.headers["Retry-After"]) >= 1
        assert http.get(f"{PREFIX}/stats").status_code == 200


def test_reads_can_need_a_token_too(client: Celery, workers: list[WorkerProcess]) -> None:
    """With read_token set, every endpoint needs it."""
    with api(client, read_token=TOKEN) as http:
        assert http.get(f"{PREFIX}/health").status_code == 401
        ok = http.get(f"{PREFIX}/health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


def test_short_tokens_are_refused() -> None:
    """A token under 16 characters is a configuration error that says how to make one."""
    with pytest.raises(ValueError, match="at least 16 characters"):
        ApiSettings(token="secret")


def test_cluster_metrics_page_and_scrape_targets(
        client: Celery, queue_name: str, workers: list[WorkerProcess]) -> None:
    """/metrics shows workers, every queue (unconsumed too) and requests; targets list each
    worker's own /metrics."""
    orphan = f"{queue_name}-orphan"
    client.conf.task_routes = {"tests.workerapp.add": {"queue": orphan}}
    try:
        for _ in range(3):
            client.send_task("tests.workerapp.add", (1, 2))
        with api(client) as http:
            assert http.get(f"{PREFIX}/health").status_code == 200
            samples = parse_metrics(http.get(f"{PREFIX}/metrics").text)
            assert samples[("celery_workers_count", frozenset())] == 2
            assert samples[("celery_observe_api_workers",
                            frozenset({("state", "answering")}))] == 2
            assert samples[("celery_queue_length", frozenset({("queue_name", orphan)}))] == 3
            assert samples[("celery_queues_backlog", frozenset({("queue", orphan)}))] == 3
            assert samples[("celery_queue_consumers", frozenset({("queue_name", orphan)}))] == 0
            assert samples[("celery_queue_consumers",
                            frozenset({("queue_name", queue_name)}))] == 2
            assert samples[("celery_observe_api_requests_total", frozenset(
                {("path", "/health"), ("method", "GET"), ("status", "200")}))] == 1
            targets = http.get(f"{PREFIX}/prometheus/targets").json()
            assert sorted(t["targets"][0] for t in targets) == sorted(
                f"127.0.0.1:{worker.port}" for worker in workers)
            assert {t["labels"]["worker"] for t in targets} == {w.hostname for w in workers}
            assert {t["labels"]["queues"] for t in targets} == {queue_name}
    finally:
        if client.conf.broker_url.startswith("amqp"):
            with client.connection_for_write() as connection:
                connection.default_channel.queue_delete(orphan)


def test_execute_sends_only_allowlisted_tasks(
        client: Celery, queue_name: str, workers: list[WorkerProcess]) -> None:
    """Execute needs the token and a name on the allowlist; the sent task runs."""
    client.conf.task_default_queue = queue_name
    good = {"Authorization": f"Bearer {TOKEN}"}
    with api(client) as http:
        assert http.post(f"{PREFIX}/tasks/tests.workerapp.add/execute").status_code == 403
    with api(client, token=TOKEN, execute_allowlist=("tests.workerapp.add",)) as http:
        refused = http.post(f"{PREFIX}/tasks/tests.workerapp.boom/execute", headers=good)
        assert refused.status_code == 403 and "allowlist" in refused.json()["detail"]
        wrong = http.post(f"{PREFIX}/tasks/tests.workerapp.add/execute", headers=good,
                          json={"args": "not a list"})
        assert wrong.status_code == 422
        sent = http.post(f"{PREFIX}/tasks/tests.workerapp.add/execute", headers=good,
                         json={"args": [20, 22]})
        assert sent.status_code == 202
        task_id = sent.json()["task_id"]
        found = wait_until(lambda: http.get(f"{PREFIX}/tasks", params={
            "id_prefix": task_id, "use_cache": "false"}).json()["tasks"], 30, "the sent task")
        assert [(t["name"], t["state"]) for t in found] == [("tests.workerapp.add", "success")]
        by_state = http.get(f"{PREFIX}/tasks", params={"state": "failure"}).json()["tasks"]
        assert by_state == []
        assert http.get(f"{PREFIX}/tasks", params={"state": "lost"}).status_code == 422
