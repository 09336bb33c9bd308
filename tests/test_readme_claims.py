"""README claims that no other test pinned: defaults, limits, caps, labels and exit codes."""

from __future__ import annotations

import inspect
import json
import re
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from billiard.exceptions import Terminated, TimeLimitExceeded, WorkerLostError
from celery import Celery
from celery.exceptions import Ignore, Retry
from celery.worker.control import Panel

from celery_observe import TaskCounter, install
from celery_observe.cluster import cli
from celery_observe.cluster.client import Cluster
from celery_observe.cluster.verdict import EXIT_CODES, cluster_health
from celery_observe.config import SETTINGS, ObserveConfig, ObserveConfigError, resolve_config
from celery_observe.faults import FaultLog
from celery_observe.named_caches import CACHE_SPECS
from celery_observe.queues import QueueReader
from celery_observe.shapes import QueueReport
from celery_observe.testing import parse_metrics, wait_until
from celery_observe.worker.http_server import Limits, ObserveHTTPServer, json_response
from celery_observe.worker.metrics import FailureRate
from celery_observe.worker.observer import Observer
from celery_observe.worker.outcome import IGNORED, Outcome, classify_failure
from celery_observe.worker.routes import routes

from .workers import REPO, WorkerProcess

README = (REPO / "README.md").read_text()


@pytest.fixture
def observer() -> Iterator[Observer]:
    app = Celery("claims", broker="memory://", set_as_current=False)
    observer = Observer(app, ObserveConfig(enabled=True))
    observer.task_code_metrics.start()
    yield observer
    observer.stop()
    app.close()


def samples(observer: Observer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return parse_metrics(routes(observer)["/metrics"]({}).body.decode())


def test_settings_table_spells_every_setting_as_the_code() -> None:
    """Each row of the settings table is a setting's flag, app.conf key and variable."""
    rows = re.findall(r"^\| `(--observe[^`]*)` \| `([^`]+)` \| `([^`]+)` \|", README, re.M)
    assert rows == [(s.flag, s.conf_key, s.env_var) for s in SETTINGS]


def test_setting_defaults_are_the_documented_ones() -> None:
    """Off, 9540, 0.0.0.0, 5 ms..2 h buckets, 60 s, 1000, 30 s, 1000, all, none, off."""
    guide = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
    assert resolve_config({}, {}, {}) == ObserveConfig(
        enabled=False, port=9540, address="0.0.0.0",
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                 600, 1800, 3600, 7200),
        liveness_timeout=60, history_size=1000, resource_interval=30, max_task_names=1000,
        task_names_allow=(), task_names_deny=(), show_task_args=False)
    assert resolve_config({}, {"observe_buckets": "guide"}, {}).buckets == guide
    assert set(guide) <= set(resolve_config({}, {}, {}).buckets)
    fast = resolve_config({}, {"observe_buckets": "fast"}, {}).buckets
    assert (fast[0], fast[-1]) == (0.005, 60)


def test_django_namespace_reads_celery_observe_keys() -> None:
    """With namespace="CELERY", CELERY_OBSERVE_PORT in settings.py sets the port."""
    settings = SimpleNamespace(CELERY_OBSERVE_PORT=7001, CELERY_BROKER_URL="memory://")
    app = Celery("claims", set_as_current=False)
    app.config_from_object(settings, namespace="CELERY")
    assert resolve_config({}, app.conf, {}).port == 7001


def test_bad_value_message_is_the_documented_one() -> None:
    """A bad port from the environment gives the README's message word for word."""
    with pytest.raises(ObserveConfigError) as raised:
        resolve_config({}, {}, {"CELERY_OBSERVE_PORT": "http"})
    assert str(raised.value) in README.replace("\n", " ")


def test_http_limits_are_the_documented_ones() -> None:
    """256 connections, 16 KiB head, 100 headers, 8 KiB line, 5 s, 10 s, 10 s, 2 threads, 16."""
    assert Limits() == Limits(max_connections=256, max_head_bytes=16 * 1024, max_headers=100,
                              max_request_line=8 * 1024, head_seconds=5, render_seconds=10,
                              write_seconds=10, render_threads=2, render_backlog=16)


def test_at_the_default_cap_of_256_the_oldest_idle_client_makes_room() -> None:
    """With 256 silent clients connected a probe is answered and the oldest is closed."""
    http = ObserveHTTPServer("127.0.0.1", 0, {"/hello": lambda _h: json_response(200, {})},
                             FaultLog(), inline_paths={"/hello"})
    http.start()
    address = ("127.0.0.1", http.bound_port)
    clients = [socket.create_connection(address, timeout=5) for _ in range(256)]
    try:
        wait_until(lambda: http.open_connections == 256, 10, "256 silent clients held")
        with socket.create_connection(address, timeout=5) as probe:
            probe.sendall(b"GET /hello HTTP/1.1\r\n\r\n")
            assert probe.recv(12) == b"HTTP/1.1 200"
        assert clients[0].recv(1) == b""  # closed to make room
    finally:
        for client in clients:
            client.close()
        http.stop()


def test_readyz_not_ready_body_has_status_and_reason(observer: Observer) -> None:
    """Before the consumer runs, /readyz is 503 {"status": "not ready", "reason": ...}."""
    answer = routes(observer)["/readyz"]({})
    assert answer.status == 503 and json.loads(answer.body).keys() == {"status", "reason"}
    assert json.loads(answer.body)["status"] == "not ready"


def test_status_has_the_documented_fields(observer: Observer) -> None:
    """/status names host, pid, pool, concurrency, version, queues, address, active,
    reserved, counts, ready, uptime, prefetch, processes and their RSS."""
    status = json.loads(routes(observer)["/status"]({}).body)
    assert {"hostname", "pid", "pool", "concurrency", "celery_version", "queues",
            "http_address", "http_port", "active", "reserved_count", "counts", "ready",
            "uptime_seconds", "prefetch_count", "processes", "rss_bytes"} <= set(status)
    assert status["ready"] is False


def test_task_total_starts_every_status_at_zero(observer: Observer) -> None:
    """A task's first outcome brings all five status series, the others at 0."""
    observer.recorder.started("proj.t")
    observer.recorder.finished("proj.t", Outcome("success"), 0.0)
    got = {dict(labels)["status"]: value for (name, labels), value in samples(observer).items()
           if name == "celery_task_total"}
    assert got == {"success": 1, "failure": 0, "retry": 0, "revoked": 0, "rejected": 0}


def test_retry_reasons_are_capped_at_1000_pairs(observer: Observer) -> None:
    """The 1001st (task, reason) pair counts as reason="other" and as a dropped value."""
    for n in range(1001):
        observer.recorder.finished("proj.t", Outcome("retry", retry_reason=f"E{n}"), None)
    got = samples(observer)
    reasons = {dict(labels)["reason"] for name, labels in got if name ==
               "celery_task_retries_total"}
    assert len(reasons) == 1001 and "other" in reasons and "E1000" not in reasons
    assert got[("celery_observe_dropped_label_values_total",
                frozenset({("label", "reason")}))] == 1


def test_task_metric_names_are_capped_at_200(observer: Observer) -> None:
    """Updates of a 201st task metric name are dropped and counted."""
    for n in range(201):
        TaskCounter(f"claims_metric_{n}_total", "A task metric.").inc()
    got = samples(observer)
    assert ("claims_metric_199_total", frozenset()) in got
    assert not [key for key in got if key[0] == "claims_metric_200_total"]
    assert got[("celery_observe_dropped_label_values_total",
                frozenset({("label", "task_metric_name")}))] == 1


def test_ignored_task_is_not_counted_and_leaves_active_tasks(observer: Observer) -> None:
    """raise Ignore(): no celery_task_total increment, and celery_active_tasks back to 0."""
    observer.recorder.started("proj.t")
    observer.recorder.finished("proj.t", IGNORED, 0.0)
    got = samples(observer)
    assert got[("celery_active_tasks", frozenset({("task_name", "proj.t")}))] == 0
    assert not [v for (name, _), v in got.items() if name == "celery_task_total" and v]


def request(cancelled: bool = False, **task: Any) -> Any:
    task = {"acks_late": False, "acks_on_timeout": True, "reject_on_worker_lost": False,
            "retry_on_worker_lost": False, "max_retries": 3, **task}
    return SimpleNamespace(task=SimpleNamespace(**task), _context=SimpleNamespace(retries=0),
                           _already_cancelled=cancelled, _already_revoked=False)


@pytest.mark.parametrize(("req", "exc", "expected"), [
    (request(), Retry(exc=None), Outcome("retry", retry_reason="Retry")),
    (request(retry_on_worker_lost=True), WorkerLostError(),
     Outcome("retry", retry_reason="WorkerLostError")),
    (request(acks_late=True, acks_on_timeout=False), TimeLimitExceeded(1),
     Outcome("retry", retry_reason="TimeLimitExceeded", timed_out=True)),
    (request(cancelled=True), Terminated(15), Outcome("retry", retry_reason="Cancelled")),
    (request(), Ignore(), IGNORED),
], ids=["retry-without-exc", "retry-on-worker-lost", "acks-on-timeout-off", "cancel", "ignore"])
def test_outcome_table_rows_without_a_worker_test(req: Any, exc: BaseException,
                                                  expected: Outcome) -> None:
    """Rows of "What is counted as what" that test_outcomes.py does not reach."""
    assert classify_failure(req, exc) == expected


def test_failure_rate_counts_the_last_60_seconds() -> None:
    """A failure counts in celery_task_failure_rate for 60 s, then no more."""
    rate = FailureRate(clock=iter([1000.0, 1059.0, 1060.0]).__next__)  # one reading a call
    rate.add("proj.t")
    assert (rate.per_minute("proj.t"), rate.per_minute("proj.t")) == (1, 0)


def test_install_stamps_the_publish_time_header() -> None:
    """A producer that called install(app) adds celery_observe_published_at to each task."""
    app = Celery("claims", broker="memory://", set_as_current=False)
    install(app)
    before = datetime.now(timezone.utc).timestamp()
    app.send_task("proj.t", queue="claims-stamp")
    with app.connection_for_read() as connection:
        message = connection.SimpleQueue("claims-stamp").get(timeout=5)
        message.ack()
    assert message.headers["celery_observe_published_at"] >= before
    app.close()


def test_cluster_and_cli_defaults_are_the_documented_ones() -> None:
    """timeout 1 s, discovery 0.25 s, forget 60 s, --queue-threshold 1000, top every 2 s."""
    defaults = {name: p.default for name, p in inspect.signature(Cluster).parameters.items()}
    assert (defaults["timeout"], defaults["discovery_timeout"], defaults["forget_after"],
            defaults["queue_threshold"]) == (1.0, 0.25, 60.0, 1000)
    health = {p.name: p.default for p in cli.health.params}
    assert (health["queue_threshold"], health["timeout"], health["discovery_timeout"],
            {p.name: p.default for p in cli.top.params}["interval"]) == (1000, 1.0, 0.25, 2.0)


def test_queue_length_is_cached_3_s_and_bounded_by_2_s() -> None:
    """The queue-length reader caches in the 3 s queue_status cache and times out after 2 s."""
    defaults = inspect.signature(QueueReader).parameters
    assert (CACHE_SPECS["queue_status"][0], defaults["timeout"].default) == (3.0, 2.0)


def test_unobserved_worker_answers_that_it_is_not_observed() -> None:
    """An observe_* command on a worker without --observe replies with that error."""
    reply = Panel.data["observe_status"](SimpleNamespace(consumer=None))
    assert reply == {"error": "celery-observe is not enabled on this worker "
                              "(start it with --observe)"}


def test_health_exit_codes_and_queue_threshold() -> None:
    """Exit 0/1/2; a queue over the threshold makes a working cluster degraded (exit 1)."""
    assert EXIT_CODES == {"healthy": 0, "degraded": 1, "unhealthy": 2}
    queue = QueueReport(length=1001, by_priority={}, oldest_message_age_seconds=None,
                        consumers=["w@h"], unconsumed=False)
    verdict = cluster_health(workers={"w@h": {}}, missing=[], queues={"celery": queue},
                             broker_error=None, queue_threshold=1000, start_command="x")
    assert verdict["status"] == "degraded"


@pytest.mark.broker
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_expired_task_counts_as_revoked_without_duration(broker: str, client: Celery,
                                                         queue_name: str) -> None:
    """A task received after its expiry time is status="revoked" with no duration."""
    expired = datetime.now(timezone.utc) - timedelta(seconds=30)
    with WorkerProcess(broker, queue_name, pool="threads") as worker:
        client.send_task("tests.workerapp.add", (1, 1), queue=queue_name, expires=expired)
        revoked = ("celery_task_total", frozenset({("task_name", "tests.workerapp.add"),
                                                   ("status", "revoked")}))
        got = wait_until(lambda: (s := worker.metrics()).get(revoked) == 1 and s, 20, "revoked")
    assert not [v for (name, _), v in got.items() if name.startswith("celery_task_duration")
                and name.endswith("_count") and v]
