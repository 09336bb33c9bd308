"""observe_status and GET /workers/status carry processes, RSS, prefetch, uptime and the
advertised address: from the resource monitor's last sample, never from a live psutil call."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_observe.cluster.bodies import workers_status
from celery_observe.cluster.client import Cluster
from celery_observe.config import ObserveConfig
from celery_observe.faults import FaultLog
from celery_observe.testing import wait_until
from celery_observe.worker.observer import Observer
from celery_observe.worker.resources import ResourceMonitor

from .conftest import broker_url
from .test_api import PREFIX, api
from .workers import WorkerProcess

SLEEPER = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"]
ADVERTISED = "10.1.2.3"


# --- broker-free: the monitor's snapshot, the observer's fields, the API body -------------


def test_latest_is_empty_before_the_first_sample() -> None:
    """Before the monitor has sampled, latest() is [] (the status shows no processes)."""
    assert ResourceMonitor(list, FaultLog()).latest() == []


def test_latest_is_the_last_sample_not_the_live_processes() -> None:
    """latest() lists main then children from the last sample: a child killed since is
    still listed, because the status path asks the OS nothing."""
    child = subprocess.Popen(SLEEPER, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        monitor = ResourceMonitor(lambda: [child.pid], FaultLog())
        monitor.sample()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    processes = monitor.latest()
    assert [(p["pid"], p["role"]) for p in processes] == [(os.getpid(), "main"),
                                                          (child.pid, "child")]
    assert all(p["rss_bytes"] > 0 and p["cpu_seconds"] >= 0 for p in processes)


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("status-resources", broker="memory://", set_as_current=False)
    yield app
    app.close()


def serving_observer(app: Celery, **settings: Any) -> tuple[Observer, list[float]]:
    """An observer serving on 127.0.0.1 (port 0), its clock at 100.0 when it started."""
    now = [100.0]
    observer = Observer(app, ObserveConfig(enabled=True, port=0, address="127.0.0.1",
                                           **settings), clock=lambda: now[0])
    observer.start()
    return observer, now


def test_status_degrades_to_none_and_empty_before_start(app: Celery) -> None:
    """An observer not attached or started: no uptime, prefetch, processes or RSS."""
    status = Observer(app, ObserveConfig(enabled=True)).status()
    assert (status["uptime_seconds"], status["prefetch_count"], status["processes"],
            status["rss_bytes"], status["http_address"]) == (None, None, [], None, None)


def test_uptime_counts_from_start_on_the_injected_clock(app: Celery) -> None:
    """uptime_seconds is the observer's own clock now minus when start() ran."""
    observer, now = serving_observer(app)
    try:
        now[0] = 142.25
        assert observer.status()["uptime_seconds"] == 42.25
    finally:
        observer.stop()


def test_http_address_is_the_bound_one_without_advertise_address(app: Celery) -> None:
    """Bound to 127.0.0.1 and no advertise_address: http_address is 127.0.0.1."""
    observer, _ = serving_observer(app)
    try:
        assert (observer.status()["http_address"], observer.status()["http_port"]) == (
            "127.0.0.1", observer.bound_port)
    finally:
        observer.stop()


def test_advertise_address_replaces_the_bound_one(app: Celery) -> None:
    """With advertise_address set, http_address is that value, the port still the bound one."""
    observer, _ = serving_observer(app, advertise_address="worker1.example.com")
    try:
        assert (observer.status()["http_address"], observer.status()["http_port"]) == (
            "worker1.example.com", observer.bound_port)
    finally:
        observer.stop()


def cluster_status(workers: dict[str, Any], missing: list[str]) -> Any:
    return {"timestamp": "2026-12-01T10:27:56Z", "missing": missing, "errors": {},
            "broker": "redis://", "workers_online": len(workers), "workers": workers,
            "totals": {"active": 0, "reserved": 0, "concurrency": 0}, "queues": {}}


ONLINE = {"hostname": "w1@a", "pid": 10, "pool": "prefork", "concurrency": 2,
          "celery_version": "5.7.0", "queues": ["q"], "http_address": "fd00::5",
          "http_port": 9540, "active": [], "active_count": 1, "reserved_count": 0,
          "counts": {}, "ready": True, "uptime_seconds": 61.5, "prefetch_count": 8,
          "processes": [{"pid": 10, "role": "main", "rss_bytes": 3000, "cpu_seconds": 1.0},
                        {"pid": 11, "role": "child", "rss_bytes": 2000, "cpu_seconds": 0.5}],
          "rss_bytes": 5000}


def test_workers_status_body_has_resources_and_metrics_url() -> None:
    """An online worker's entry has its prefetch, processes, RSS, uptime and a bracketed
    IPv6 metrics_url; a missing one has None and []."""
    body = workers_status(cluster_status({"w1@a": ONLINE}, ["w2@b"]))
    assert body["workers"] == [
        {"name": "w1@a", "status": "online", "pool": {"max_concurrency": 2, "busy_workers": 1},
         "pool_type": "prefork", "queues": ["q"], "http_address": "fd00::5", "http_port": 9540,
         "metrics_url": "http://[fd00::5]:9540/metrics", "ready": True, "prefetch_count": 8,
         "processes": ONLINE["processes"], "rss_bytes": 5000, "uptime_seconds": 61.5},
        {"name": "w2@b", "status": "missing", "pool": None, "pool_type": None, "queues": [],
         "http_address": None, "http_port": None, "metrics_url": None, "ready": None,
         "prefetch_count": None, "processes": [], "rss_bytes": None, "uptime_seconds": None}]


def test_workers_status_body_takes_a_worker_of_an_older_version() -> None:
    """A reply without the new fields (a rolling upgrade) gives None and [], not a 500."""
    old = {key: value for key, value in ONLINE.items()
           if key not in {"uptime_seconds", "prefetch_count", "processes", "rss_bytes"}}
    entry = workers_status(cluster_status({"w1@a": old}, []))["workers"][0]
    assert (entry["prefetch_count"], entry["processes"], entry["rss_bytes"],
            entry["uptime_seconds"]) == (None, [], None, None)


# --- a real prefork -c 2 worker on Redis --------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> str:
    return broker_url("redis")


@pytest.fixture(scope="module")
def queue() -> str:
    return f"observe-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def worker(redis_url: str, queue: str) -> Iterator[WorkerProcess]:
    """One prefork -c 2 worker (the default prefetch multiplier 4), advertising 10.1.2.3."""
    running = WorkerProcess(redis_url, queue, pool="prefork", concurrency=2, extra_args=(
        "--prefetch-multiplier", "4", "--observe-advertise-address", ADVERTISED))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def producer(redis_url: str, queue: str) -> Iterator[Celery]:
    """A client app on the worker's remote-control exchange; removes the queue afterwards."""
    app = Celery("client", broker=redis_url, set_as_current=False)
    app.conf.control_exchange = queue
    yield app
    with app.connection_for_write() as connection, contextlib.suppress(Exception):
        redis = connection.default_channel.client
        redis.delete(*redis.keys(f"{queue}*") or [queue])
    app.close()


@pytest.fixture
def cluster(producer: Celery) -> Iterator[Cluster]:
    cluster = Cluster(producer, timeout=5, discovery_timeout=1, use_cache=False)
    yield cluster
    cluster.close()


def fresh_status(cluster: Cluster, worker: WorkerProcess) -> Any:
    """observe_status of ``worker``, computed afresh (the worker's cache bypassed)."""
    return wait_until(lambda: cluster.status()["workers"].get(worker.hostname), 20,
                      f"{worker.hostname} to answer")


@pytest.mark.broker
def test_status_lists_main_and_both_children_with_their_real_pids(
        cluster: Cluster, worker: WorkerProcess) -> None:
    """prefork -c 2: three processes, main first, with the worker's real pids and RSS."""
    status: Any = wait_until(lambda: (s := fresh_status(cluster, worker)) and len(
        s["processes"]) == 3 and s, 20, "a sample with both children")
    children = {child.pid for child in worker.main_process().children()}
    assert len(children) == 2
    assert [(p["pid"], p["role"]) for p in status["processes"][:1]] == [(worker.pid, "main")]
    assert {p["pid"] for p in status["processes"][1:]} == children
    assert {p["role"] for p in status["processes"][1:]} == {"child"}
    assert all(p["rss_bytes"] > 0 for p in status["processes"])
    assert status["rss_bytes"] == sum(p["rss_bytes"] for p in status["processes"])


@pytest.mark.broker
def test_status_prefetch_is_concurrency_times_the_multiplier(
        cluster: Cluster, worker: WorkerProcess) -> None:
    """-c 2 with the prefetch multiplier 4: prefetch_count 8."""
    assert fresh_status(cluster, worker)["prefetch_count"] == 8


@pytest.mark.broker
def test_status_uptime_grows(cluster: Cluster, worker: WorkerProcess) -> None:
    """Two fresh statuses: the later one's uptime is larger."""
    first = fresh_status(cluster, worker)["uptime_seconds"]
    assert first > 0
    wait_until(lambda: fresh_status(cluster, worker)["uptime_seconds"] > first, 10,
               "the uptime to grow")


@pytest.mark.broker
def test_advertise_address_reaches_the_api_targets_and_workers_status(
        producer: Celery, worker: WorkerProcess) -> None:
    """--observe-advertise-address 10.1.2.3: the API's Prometheus target and the worker's
    metrics_url use it, with the port the worker really serves on."""
    with api(producer) as http:
        targets = http.get(f"{PREFIX}/prometheus/targets", params={"use_cache": "false"})
        entry = http.get(f"{PREFIX}/workers/status").json()["workers"][0]
    assert targets.json() == [{"targets": [f"{ADVERTISED}:{worker.port}"], "labels": {
        "worker": worker.hostname, "pool": "prefork", "queues": worker.queue}}]
    assert (entry["http_address"], entry["metrics_url"], entry["prefetch_count"],
            len(entry["processes"])) == (
        ADVERTISED, f"http://{ADVERTISED}:{worker.port}/metrics", 8, 3)

