"""Queue lengths come from the real broker, once per TTL, and a dead broker costs a bounded time."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.exceptions import CDeprecationWarning
from prometheus_client import CollectorRegistry

from celery_observe.faults import FaultLog
from celery_observe.queues import (
    PUBLISHED_AT_HEADER,
    QueueDepth,
    QueueReader,
    QueueReading,
    configured_queue_names,
)
from celery_observe.testing import free_port
from celery_observe.worker.queue_metrics import QueueLengthCollector

from .conftest import BROKERS, broker_url

TIMEOUT = 0.5  # the collector's broker timeout in these tests
LENGTH = "celery_queue_length"
ERRORS = "celery_queue_length_errors_total"


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingQueueReader(QueueReader):
    """Counts broker round trips; ``delay`` stands in for a slow broker.

    ``measure()`` with no names measures the queues it was made for, as a worker's scrape does.
    """

    def __init__(self, *args: Any, names: Sequence[str] = (), delay: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.names = list(names)
        self.delay = delay
        self.round_trips = 0
        self._count_lock = threading.Lock()

    def read_broker(self, queue_names: Sequence[str]) -> dict[str, QueueDepth]:
        with self._count_lock:
            self.round_trips += 1
        if self.delay:
            time.sleep(self.delay)
        return super().read_broker(queue_names)

    def measure(self, names: Sequence[str] | None = None, *,
                use_cache: bool = True) -> dict[str, QueueDepth]:
        return super().measure(self.names if names is None else names, use_cache=use_cache)


class Proxy:
    """A TCP relay to a real broker that can be frozen: bytes in, nothing out, like a dead peer."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                self.threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    return
                if not self.frozen.is_set():
                    sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes threads blocked on it
        for thread in self.threads:
            thread.join(5)
        for sock in [self.listener, *self.sockets]:
            sock.close()


def publish(app: Celery, queue: str, priorities: Sequence[int | None] = (None,),
            headers: dict[str, Any] | None = None) -> None:
    """Send one message per priority on a connection closed afterwards (no pooled sockets)."""
    with app.connection_for_write() as connection, connection.Producer() as producer:
        for priority in priorities:
            app.send_task("observe.test", queue=queue, priority=priority, headers=headers,
                          producer=producer)


@pytest.fixture
def apps() -> Iterator[Callable[..., Celery]]:
    """Builds producer apps; afterwards deletes the test's queues and closes the apps."""
    made: list[tuple[Celery, str, bool]] = []

    def make(url: str, queue: str, cleanup: bool = True, **transport_options: Any) -> Celery:
        app = Celery("queues-test", broker=url, set_as_current=False)
        app.conf.broker_transport_options = transport_options
        made.append((app, queue, cleanup))
        return app

    yield make
    for app, queue, cleanup in made:
        url = app.conf.broker_url
        if not cleanup:
            pass
        elif url.startswith("redis://"):
            client = redis.Redis.from_url(url)
            for key in client.scan_iter(match=f"*{queue}*"):
                client.delete(key)
            client.close()
        elif url.startswith(("amqp://", "memory://")):
            with app.connection_for_write() as connection:
                connection.default_channel.queue_delete(queue)
        app.close()


@pytest.fixture
def collectors() -> Iterator[Callable[..., CountingQueueReader]]:
    """Builds readers of ``names`` with a test's defaults and closes them afterwards."""
    made: list[CountingQueueReader] = []

    def make(app: Celery, names: Sequence[str], **kwargs: Any) -> CountingQueueReader:
        kwargs.setdefault("timeout", TIMEOUT)
        collector = CountingQueueReader(app, kwargs.pop("faults", FaultLog()), names=names,
                                        **kwargs)
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.close()


@pytest.fixture
def queue() -> str:
    return f"observe-q-{uuid.uuid4().hex[:12]}"


def scrape(reader: CountingQueueReader) -> CollectorRegistry:
    """A registry holding the worker's queue collector over ``reader``'s queues."""
    registry = CollectorRegistry()
    registry.register(QueueLengthCollector(reader, lambda: reader.names))
    return registry


def url_for(name: str, port: int) -> str:
    """A broker URL of kind ``name`` pointing at ``port`` on localhost."""
    return broker_url(name).replace(f":{BROKERS[name][1]}/", f":{port}/")


# --- Redis ----------------------------------------------------------------------------------


@pytest.mark.broker
def test_redis_total_sums_priority_sub_queues(apps: Any, collectors: Any, queue: str) -> None:
    """Ten messages of priorities 0..9 count 10 in total and land in kombu's steps 3/3/3/1."""
    app = apps(broker_url("redis", db=12), queue)
    publish(app, queue, priorities=range(10))
    with app.connection_for_read() as connection:
        bucket = connection.default_channel.priority
        expected = {step: sum(1 for p in range(10) if bucket(p) == step) for step in (0, 3, 6, 9)}
    depth = collectors(app, [queue]).measure()[queue]
    assert depth.total == 10
    assert depth.by_priority == expected == {0: 3, 3: 3, 6: 3, 9: 1}


@pytest.mark.broker
def test_redis_priority_steps_and_separator_come_from_transport_options(
        apps: Any, collectors: Any, queue: str) -> None:
    """Custom ``priority_steps`` and ``sep`` are followed: steps [0, 5] with ':' keys."""
    app = apps(broker_url("redis", db=12), queue, priority_steps=[0, 5], sep=":")
    publish(app, queue, priorities=range(10))
    client = redis.Redis.from_url(broker_url("redis", db=12))
    assert client.llen(f"{queue}:5") == 5
    client.close()
    registry = scrape(collectors(app, [queue]))
    assert registry.get_sample_value(LENGTH, {"queue_name": queue}) == 10
    by_priority = "celery_queue_length_by_priority"
    assert registry.get_sample_value(by_priority, {"queue_name": queue, "priority": "0"}) == 5
    assert registry.get_sample_value(by_priority, {"queue_name": queue, "priority": "5"}) == 5


@pytest.mark.broker
def test_redis_global_keyprefix_is_applied(apps: Any, collectors: Any, queue: str) -> None:
    """With ``global_keyprefix`` both the lengths and the oldest message are found."""
    app = apps(broker_url("redis", db=12), queue, global_keyprefix="observe-prefix:")
    publish(app, queue, headers={PUBLISHED_AT_HEADER: 970.0})
    collector = collectors(app, [queue], clock=FakeClock(), wall_clock=lambda: 1000.0)
    depth = collector.measure()[queue]
    assert (depth.total, depth.oldest_age_seconds) == (1, 30.0)


@pytest.mark.broker
def test_redis_second_measure_within_ttl_is_cached(apps: Any, collectors: Any,
                                                    queue: str) -> None:
    """Within the TTL a new message is not seen and the broker is not asked; after it, it is."""
    app = apps(broker_url("redis", db=12), queue)
    clock = FakeClock()
    collector = collectors(app, [queue], clock=clock)
    publish(app, queue)
    assert collector.measure()[queue].total == 1
    publish(app, queue)
    clock.advance(2.999)
    assert collector.measure()[queue].total == 1
    assert collector.round_trips == 1
    clock.advance(0.001)
    assert collector.measure()[queue].total == 2
    assert collector.round_trips == 2


@pytest.mark.broker
def test_redis_oldest_age_of_stamped_message(apps: Any, collectors: Any, queue: str) -> None:
    """A message stamped 30 s ago at the consuming end is about 30 s old."""
    app = apps(broker_url("redis", db=12), queue)
    publish(app, queue, headers={PUBLISHED_AT_HEADER: time.time() - 30})
    publish(app, queue, headers={PUBLISHED_AT_HEADER: time.time()})  # newer, not at the tail
    age = collectors(app, [queue]).measure()[queue].oldest_age_seconds
    assert age is not None
    assert 29 <= age <= 60


@pytest.mark.broker
def test_redis_oldest_age_absent_for_unstamped(apps: Any, collectors: Any, queue: str) -> None:
    """Without the publish stamp the age is unknown: None, and no sample is exported."""
    app = apps(broker_url("redis", db=12), queue)
    publish(app, queue, priorities=(0, 9))
    collector = collectors(app, [queue])
    assert collector.measure()[queue].oldest_age_seconds is None
    age = "celery_queue_oldest_message_age_seconds"
    assert scrape(collector).get_sample_value(age, {"queue_name": queue}) is None


@pytest.mark.broker
def test_redis_oldest_age_spans_priorities_and_grows_while_cached(
        apps: Any, collectors: Any, queue: str) -> None:
    """The oldest stamp of all sub-queues wins, and a cached age grows with the clock."""
    app = apps(broker_url("redis", db=12), queue)
    publish(app, queue, priorities=(9,), headers={PUBLISHED_AT_HEADER: 970.0})
    publish(app, queue, priorities=(0,), headers={PUBLISHED_AT_HEADER: 990.0})
    clock = FakeClock()
    collector = collectors(app, [queue], clock=clock, wall_clock=lambda: 1000.0)
    assert collector.measure()[queue].oldest_age_seconds == 30.0
    clock.advance(2.0)
    assert collector.measure()[queue].oldest_age_seconds == 32.0
    assert collector.round_trips == 1


# --- RabbitMQ and the passive-declare fallback ---------------------------------------------


@pytest.mark.broker
def test_amqp_count_by_passive_declare(apps: Any, collectors: Any, queue: str) -> None:
    """RabbitMQ reports the exact count; no priority breakdown and no age."""
    app = apps(broker_url("rabbitmq"), queue)
    publish(app, queue, priorities=(None,) * 5)
    assert collectors(app, [queue]).measure() == {queue: QueueDepth(queue, 5, {}, None)}


@pytest.mark.broker
def test_amqp_missing_queue_is_absent_and_others_still_count(
        apps: Any, collectors: Any, queue: str) -> None:
    """A queue RabbitMQ does not know is absent (not 0, not an error); the rest are measured."""
    app = apps(broker_url("rabbitmq"), queue)
    publish(app, queue, priorities=(None,) * 2)
    names = [f"{queue}-missing-1", queue, f"{queue}-missing-2"]
    collector = collectors(app, names)
    registry = scrape(collector)
    assert collector.measure() == {queue: QueueDepth(queue, 2, {}, None)}
    assert registry.get_sample_value(LENGTH, {"queue_name": names[0]}) is None
    assert registry.get_sample_value(ERRORS) == 0


@pytest.mark.parametrize("transport", ["memory", "filesystem"])
def test_other_transports_answer_passive_declare(apps: Any, collectors: Any, queue: str,
                                                  transport: str, tmp_path: Path) -> None:
    """memory:// and filesystem:// report their count through a passive declare, no error."""
    app = apps(f"{transport}://", queue)
    if transport == "filesystem":
        app.conf.broker_transport_options = {"data_folder_in": str(tmp_path),
                                             "data_folder_out": str(tmp_path),
                                             "control_folder": str(tmp_path / "control")}
    publish(app, queue, priorities=(None,) * 3)
    collector = collectors(app, [queue])
    assert collector.measure()[queue].total == 3
    assert collector.errors == 0


# --- errors and bounds ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_closed_port_counts_one_error_per_ttl_and_logs_once(
        apps: Any, collectors: Any, queue: str, kind: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A refused connection: no gauges, errors_total 1 for the TTL, then 2; one log line."""
    url = BROKERS[kind][2].format(db=0).replace(f":{BROKERS[kind][1]}/", f":{free_port()}/")
    clock = FakeClock()
    collector = collectors(apps(url, queue, cleanup=False), [queue], clock=clock)
    registry = scrape(collector)
    started = time.monotonic()
    assert registry.get_sample_value(LENGTH, {"queue_name": queue}) is None
    assert time.monotonic() - started < TIMEOUT + 1
    assert registry.get_sample_value(ERRORS) == 1
    clock.advance(2.9)
    assert registry.get_sample_value(ERRORS) == 1
    assert collector.round_trips == 1
    clock.advance(0.1)
    assert registry.get_sample_value(ERRORS) == 2
    assert len([r for r in caplog.records if r.name == "celery_observe"]) == 1


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_failed_connects_leave_no_descriptor_open(apps: Any, collectors: Any, queue: str,
                                                  kind: str) -> None:
    """Each failed connect closes what it opened then, not at the next garbage collection."""
    url = BROKERS[kind][2].format(db=0).replace(f":{BROKERS[kind][1]}/", f":{free_port()}/")
    clock = FakeClock()
    collector = collectors(apps(url, queue, cleanup=False), [queue], clock=clock)
    assert collector.measure() == {}  # the first attempt may set up things kept for good
    gc.collect()
    before = open_descriptors()
    gc.disable()  # a broker outage leaves the collector little garbage to trigger one
    try:
        for _ in range(5):
            clock.advance(3.0)
            assert collector.measure() == {}
        leaked = open_descriptors() - before
    finally:
        gc.enable()
    assert collector.errors == 6
    assert leaked == 0


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_silent_broker_costs_at_most_the_timeout(apps: Any, collectors: Any, queue: str,
                                                 kind: str) -> None:
    """A server that accepts TCP but never answers fails the scrape within the timeout."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = BROKERS[kind][2].format(db=0).replace(
            f":{BROKERS[kind][1]}/", f":{silent.getsockname()[1]}/")
        collector = collectors(apps(url, queue, cleanup=False), [queue])
        started = time.monotonic()
        assert collector.measure() == {}
        assert time.monotonic() - started < TIMEOUT + 1
        assert collector.errors == 1


@pytest.mark.broker
def test_frozen_connection_costs_the_timeout_then_reconnects(
        broker: str, apps: Any, collectors: Any, queue: str) -> None:
    """A connection gone silent fails within the timeout; the next miss reconnects."""
    kind = "redis" if broker.startswith("redis") else "rabbitmq"
    proxy = Proxy(BROKERS[kind][1])
    try:
        apps(broker, queue)  # deletes the queue afterwards, not through the proxy
        app = apps(url_for(kind, proxy.port), queue, cleanup=False)
        publish(app, queue)
        clock = FakeClock()
        collector = collectors(app, [queue], clock=clock)
        assert collector.measure()[queue].total == 1
        proxy.frozen.set()
        clock.advance(3.0)
        started = time.monotonic()
        assert collector.measure() == {}
        assert time.monotonic() - started < TIMEOUT + 1
        assert collector.errors == 1
        proxy.frozen.clear()
        clock.advance(3.0)
        assert collector.measure()[queue].total == 1
        assert collector.errors == 1
    finally:
        proxy.close()


@pytest.mark.broker
def test_concurrent_measures_share_one_round_trip(broker: str, apps: Any, collectors: Any,
                                                  queue: str) -> None:
    """Eight threads measuring at once within the TTL cause one broker round trip."""
    app = apps(broker if broker.startswith("amqp") else broker_url("redis", db=12), queue)
    publish(app, queue, priorities=(None,) * 4)
    collector = collectors(app, [queue], delay=0.2)  # a slow broker, so the calls overlap
    barrier = threading.Barrier(8)
    results: list[dict[str, QueueDepth]] = []

    def scrape_once() -> None:
        barrier.wait()
        results.append(collector.measure())

    threads = [threading.Thread(target=scrape_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert collector.round_trips == 1
    assert [result[queue].total for result in results] == [4] * 8


@pytest.mark.broker
def test_concurrent_callers_of_different_sets_each_get_every_depth(
        broker: str, apps: Any, collectors: Any, queue: str) -> None:
    """Threads asking different sets of queues at once each get the depth of every one asked."""
    app = apps(broker if broker.startswith("amqp") else broker_url("redis", db=12), queue)
    names = [f"{queue}-{n}" for n in (1, 2, 3)]
    for count, name in enumerate(names, start=1):
        publish(app, name, priorities=(None,) * count)
        apps(app.conf.broker_url, name)  # the fixture deletes it afterwards
    reader = collectors(app, [], delay=0.1)
    asked = [names[:1], names[1:], names, names[::2]] * 3
    barrier = threading.Barrier(len(asked))
    answers: dict[int, dict[str, int]] = {}

    def ask(index: int) -> None:
        barrier.wait()
        depths = reader.measure(asked[index])
        answers[index] = {name: depth.total for name, depth in depths.items()}

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(len(asked))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    expected = {name: count for count, name in enumerate(names, start=1)}
    assert answers == {index: {name: expected[name] for name in wanted}
                       for index, wanted in enumerate(asked)}
    assert reader.round_trips == 4  # one per distinct set, shared by the threads asking it


@pytest.mark.broker
def test_use_cache_false_reads_the_broker_again(apps: Any, collectors: Any, queue: str) -> None:
    """Bypassing the cache costs a round trip and sees the newest depth."""
    app = apps(broker_url("redis", db=12), queue)
    publish(app, queue)
    reader = collectors(app, [queue])
    assert reader.measure()[queue].total == 1
    publish(app, queue)
    assert reader.measure()[queue].total == 1  # cached
    assert reader.measure(use_cache=False)[queue].total == 2
    assert reader.round_trips == 2


def pinned() -> None:
    """A task with a queue of its own."""


def test_configured_queue_names_come_from_every_setting() -> None:
    """Default queue, task_queues, static routes of every form and Task.queue are all found."""
    from kombu import Queue

    app = Celery("configured", set_as_current=False)
    app.conf.task_default_queue = "default"
    app.conf.task_queues = [Queue("high_priority"), Queue("default")]
    app.conf.task_routes = [
        {"app.reports.*": {"queue": "analytics"}, "app.cache.*": "cache_operations",
         "app.q.*": {"queue": Queue("as_queue_object")}, "app.x.*": {"exchange": "direct"}},
        ("app.slow.*", {"queue": "low_priority"}),
        lambda name, args, kwargs, options, task=None, **kw: None,  # a router: unreadable
        "proj.routers.route_task",
    ]
    app.task(name="app.pinned", queue="pinned_queue", shared=False)(pinned)  # this app's only
    with pytest.warns(CDeprecationWarning, match="'queue' task attribute"):  # still in use
        names = configured_queue_names(app)  # the app's tasks are made here, when first used
    assert names == {
        "default", "high_priority", "analytics", "cache_operations", "as_queue_object",
        "low_priority", "pinned_queue"}
    app.conf.task_routes = {"app.one": {"queue": "only_route"}}
    app.conf.task_queues = None
    assert configured_queue_names(app) == {"default", "only_route", "pinned_queue"}


# --- lifecycle ------------------------------------------------------------------------------


def test_registering_asks_no_broker_and_errors_start_at_zero(apps: Any, collectors: Any,
                                                             queue: str) -> None:
    """Registration uses describe(): no round trip; the error counter exists at 0."""
    collector = collectors(apps(f"redis://127.0.0.1:{free_port()}/0", queue, cleanup=False),
                           [queue])
    scrape(collector)
    assert collector.round_trips == 0
    assert collector.errors == 0


def test_no_queues_means_no_connection(apps: Any, collectors: Any, queue: str) -> None:
    """Before the worker consumes anything there is nothing to ask and no error."""
    collector = collectors(apps(f"redis://127.0.0.1:{free_port()}/0", queue, cleanup=False), [])
    assert collector.measure() == {}
    assert (collector.round_trips, collector.errors) == (0, 0)


def test_after_close_nothing_is_measured(apps: Any, collectors: Any, queue: str) -> None:
    """close() is idempotent, and a scrape after it reports nothing without an error."""
    collector = collectors(apps("memory://", queue), [queue])
    collector.close()
    collector.close()
    assert collector.measure() == {}
    assert collector.errors == 0


def test_timeout_must_be_positive() -> None:
    """A bad timeout is refused with a message naming it."""
    with pytest.raises(ValueError, match=r"timeout must be .* got 0"):
        QueueReader(Celery(set_as_current=False), FaultLog(), timeout=0)


def test_a_reading_says_zero_for_a_missing_queue_and_none_when_it_failed() -> None:
    """A queue the broker does not have is empty; a failed round trip knows no length."""
    depths = {"busy": QueueDepth("busy", 7)}
    assert [QueueReading(depths, True, 0.0).length(name) for name in ("busy", "gone")] == [7, 0]
    assert QueueReading({}, False, 0.0).length("busy") is None
