"""A broker outage mid-batch: the worker and its probes ride it out, and no outcome is lost.

Each test runs a worker of ``tests.reliability.outageapp``, whose task appends its id to
a file at every execution. It publishes a batch, takes the broker away for 20 s while
the batch runs (scraping /metrics every second, as Prometheus would), brings it back,
publishes more and waits until the broker holds nothing. Then what celery-observe
counted must equal what ran, exactly (a message the broker delivered twice ran twice
and counts twice), and the worker's threads, descriptors and broker sockets must be
back where they were before the outage.

Two things Celery decides and these tests pin down: /readyz returns at Celery's next
reconnect attempt (they back off to 10 s apart), and under prefork a task that finishes
while the main loop is away reconnecting is reported (by Celery, so by celery-observe)
when the loop runs again, not before.
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil
import pytest
import redis
from celery import Celery
from kombu import Connection

from celery_observe.testing import WaitTimeoutError, wait_until

from ..conftest import broker_url, running
from ..proxy import TCPProxy
from ..servers import RABBITMQ_SERVER, PrivateRabbitMQ, PrivateRedis
from ..workers import WorkerProcess

APP = "tests.reliability.outageapp"
TASK = f"{APP}.record"
PAUSE = 0.05  # seconds each task sleeps
CONCURRENCY = 2
BEFORE, AFTER = 60, 40  # tasks published before the outage, and after it (or during it)
OUTAGE = 20.0  # seconds the broker is away
DETECTION = 2.0  # /readyz may still answer 200 this long after the broker went away
# Celery's reconnect attempts come 2, 4, 6, 8, 10 s apart: after a 20 s outage the next
# one is up to 10 s away, and readiness cannot return before it.
READY_WITHIN = 15.0
# Descriptors other than TCP sockets the worker may hold above its baseline during the
# outage: kombu leaves the epoll descriptor of the consumer's lost Redis connection to
# the garbage collector. One per reconnect, not per attempt: anything growing fails.
SPARE_DESCRIPTORS = 1
# Celery's threads pool on Redis keeps one more broker connection after each outage,
# without celery-observe too (a plain `celery worker -P threads` gained a socket per
# outage, each left in CLOSE_WAIT by the next): upstream, so it is allowed once here.
THREADS_POOL_SPARE_SOCKETS = 1
# kombu can crash the worker while closing the lost Redis connection: Channel.close()
# restores unacked messages through a transport whose client collect() already cleared.
# Upstream (the same trace as celery/kombu#582); seen in 1 of 15 outages here.
KOMBU_CLOSE_CRASH = ("Unrecoverable error: "
                     "AttributeError(\"'NoneType' object has no attribute 'hostname'\")")
# kombu's Redis transport takes a message off its list (BRPOP) and only then records it
# in the "unacked" hash, with a second command: a Redis killed between the two loses that
# message, with nothing left to restore (upstream: the same kind of window as
# celery/celery#4354). One BRPOP is in flight at a time, so at most one message, and one
# the worker never received; seen once in CI (2026-12-02). celery-observe cannot count
# what Celery never saw: such a message is reported as a figure, not failed on.
KOMBU_BRPOP_GAP = 1
# Under prefork, a lost connection makes Celery's consumer flush the pool, which drops
# from its books each job already handed to a child that had not yet reported its start
# (AsynPool.flush: "they will be redelivered by the broker"). The child runs it anyway;
# its outcome reaches nothing in the main process (not Celery's own task_success signal,
# not celery-observe), and the unacked message is delivered again: the task runs twice
# and is counted once. At most one such job per child, and only of a task that ran twice.
POOL_FLUSH_HIDES = CONCURRENCY
Figure = Callable[[str, str], None]


# --- brokers to take away ---------------------------------------------------------------

class Outage(Protocol):
    """A broker a test can take away from the worker and give back."""

    #: The port the worker's broker sockets connect to (their remote end).
    port: int
    #: Seconds :meth:`up` takes before the broker answers again.
    startup: float
    #: False when the broker may forget acks it received shortly before it died, and
    #: deliver those messages again: a killed RabbitMQ node writes acks to disk lazily.
    keeps_acks: bool
    #: Messages the transport may lose at the moment the broker dies, before the worker
    #: ever receives them (see KOMBU_BRPOP_GAP).
    may_lose_undelivered: int

    def down(self) -> None: ...

    def up(self) -> None: ...

    def pending(self, queue: str) -> int:
        """Messages the broker still holds for ``queue`` (waiting, or unacked on Redis)."""
        ...


class RedisOutage:
    """Kill and restart a private redis-server that writes every command to disk first."""

    startup = 0.1
    keeps_acks = True  # an ack is an HDEL, on disk before Redis answers it
    may_lose_undelivered = KOMBU_BRPOP_GAP

    def __init__(self, server: PrivateRedis) -> None:
        self.server = server
        self.port = server.port

    def down(self) -> None:
        self.server.kill()

    def up(self) -> None:
        self.server.start()

    def clients(self) -> list[str]:
        """Each client connection by its last command, to tell who holds a socket."""
        client = redis.Redis(port=self.server.port, socket_timeout=2)
        try:
            return sorted(f"{c['cmd']} (age {c['age']} s)" for c in client.client_list()
                          if c["id"] != str(client.client_id()))
        finally:
            client.close()

    def pending(self, queue: str) -> int:
        client = redis.Redis(port=self.server.port, socket_timeout=2)
        try:
            # kombu keeps each delivered, unacked message in the "unacked" hash until
            # the ack, or until the visibility timeout puts it back in the queue.
            return int(client.llen(queue)) + int(client.hlen("unacked"))
        finally:
            client.close()


def _ready_messages(url: str, queue: str) -> int:
    """The messages waiting in ``queue`` (a passive declare; 0 if it does not exist).

    A message a worker holds unacked is not counted: it is either acked, or back in the
    queue once the connection that held it is gone.
    """
    with Connection(url, connect_timeout=2) as connection:
        try:
            declared = connection.default_channel.queue_declare(queue=queue, passive=True)
        except connection.channel_errors:
            return 0
        return int(declared.message_count)


class RabbitNodeOutage:
    """Kill and restart a private RabbitMQ node; its durable queues survive on disk."""

    keeps_acks = False
    may_lose_undelivered = 0

    def __init__(self, node: PrivateRabbitMQ, startup: float) -> None:
        self.node = node
        self.port = node.port
        self.startup = startup

    def down(self) -> None:
        self.node.kill()

    def up(self) -> None:
        self.node.start()

    def pending(self, queue: str) -> int:
        return _ready_messages(self.node.url(), queue)


class ProxyOutage:
    """Cut the worker's connections to the shared RabbitMQ at a proxy; the broker stays up."""

    startup = 0.0
    keeps_acks = True
    may_lose_undelivered = 0

    def __init__(self, proxy: TCPProxy, direct_url: str) -> None:
        self.proxy = proxy
        self.port = proxy.port
        self.direct_url = direct_url

    def down(self) -> None:
        self.proxy.cut()

    def up(self) -> None:
        self.proxy.restore()

    def pending(self, queue: str) -> int:
        return _ready_messages(self.direct_url, queue)


# --- what the test reads from the worker --------------------------------------------------

@dataclass(frozen=True)
class Footprint:
    """What a leak would grow in the worker's main process."""

    threads: int
    fds: int  # without sockets of the test's own HTTP requests
    broker_sockets: tuple[str, ...]  # TCP states of the sockets to the broker, sorted

    def __str__(self) -> str:
        return (f"{self.threads} threads, {self.fds} fds, "
                f"{len(self.broker_sockets)} broker sockets {list(self.broker_sockets)}")

    def back_to(self, baseline: Footprint, spare_sockets: int = 0) -> bool:
        """The same threads and other descriptors as ``baseline``; broker sockets all open,
        and at most ``spare_sockets`` more of them."""
        extra = len(self.broker_sockets) - len(baseline.broker_sockets)
        return (self.threads == baseline.threads
                and self.fds - extra == baseline.fds
                and 0 <= extra <= spare_sockets
                and set(self.broker_sockets) <= {"ESTABLISHED"})


def footprint(worker: WorkerProcess, broker_port: int) -> Footprint:
    assert worker.process is not None
    process = psutil.Process(worker.process.pid)
    connections = process.net_connections("tcp")
    http = sum(1 for c in connections if c.laddr and c.laddr.port == worker.port and c.raddr)
    return Footprint(
        threads=process.num_threads(),
        fds=process.num_fds() - http,
        broker_sockets=tuple(sorted(c.status for c in connections
                                    if c.raddr and c.raddr.port == broker_port)))


def descriptors(worker: WorkerProcess) -> collections.Counter[str]:
    """What the worker's descriptors point at, by kind (TCP sockets by remote port)."""
    assert worker.process is not None
    process = psutil.Process(worker.process.pid)
    ends = {c.fd: f"tcp to {c.raddr.port} {c.status}" if c.raddr else f"tcp {c.status}"
            for c in process.net_connections("tcp")}
    found: collections.Counter[str] = collections.Counter()
    for entry in Path(f"/proc/{process.pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            found[ends.get(int(entry.name)) or re.sub(r"\d+", "N", str(entry.readlink()))] += 1
    return found


def non_sockets(found: collections.Counter[str]) -> int:
    """Descriptors that are not sockets: files, pipes, epoll and event descriptors."""
    return sum(n for kind, n in found.items()
               if not kind.startswith(("tcp", "socket:", "udp")))


def executions(path: Path) -> list[str]:
    """The task ids in the order they finished, one per execution."""
    return path.read_text().split() if path.exists() else []


def counted(worker: WorkerProcess) -> dict[str, float]:
    """celery_task_total of the outage task, by status."""
    return {dict(labels)["status"]: value
            for (name, labels), value in worker.metrics().items()
            if name == "celery_task_total" and dict(labels).get("task_name") == TASK}


def clients(outage: Outage) -> list[str]:
    """The broker's view of its clients, where it has one (Redis's CLIENT LIST)."""
    describe = getattr(outage, "clients", None)
    return describe() if describe is not None else []


def publish(client: Celery, queue: str, path: Path, count: int) -> list[str]:
    return [client.send_task(TASK, (str(path), PAUSE), queue=queue).id for _ in range(count)]


# --- the scenario ---------------------------------------------------------------------------

@dataclass
class Timeline:
    """What the test saw from the moment the broker went away until /readyz said 200."""

    # (seconds since the broker went away, /healthz code, /readyz code)
    answers: list[tuple[float, int | None, int | None]] = field(default_factory=list)
    scrape_seconds: list[float] = field(default_factory=list)  # each /metrics while down
    extra_descriptors: list[int] = field(default_factory=list)  # non-sockets over baseline
    down_for: float = 0.0  # seconds until the broker answered again
    ready_after: float = 0.0  # seconds from then until /readyz said 200
    ran_while_down: int = 0  # executions that finished while the broker was away
    # (executions, outcomes on /metrics) late in the outage, when nothing could be running
    late_in_outage: tuple[int, float] = (0, 0.0)

    def poll(self, worker: WorkerProcess, since: float) -> int | None:
        health, ready = worker.status_code("/healthz"), worker.status_code("/readyz")
        self.answers.append((time.monotonic() - since, health, ready))
        return ready


def take_broker_away(worker: WorkerProcess, outage: Outage, baseline: int,
                     executed: Callable[[], int],
                     while_down: Callable[[], object] | None = None) -> Timeline:
    """Down for OUTAGE s, probing all along; returns once /readyz said 200 again.

    ``baseline`` is the worker's count of non-socket descriptors before; ``executed``
    counts executions so far; ``while_down`` runs once, 1 s into the outage.
    """
    timeline = Timeline()
    went_down = time.monotonic()
    outage.down()
    before = executed()
    came_up: list[float] = []

    def restart() -> None:
        outage.up()
        came_up.append(time.monotonic())

    restarter = threading.Thread(target=restart, name="restart")
    last_scrape = 0.0
    while not came_up and (restarter.ident is None or restarter.is_alive()):
        elapsed = time.monotonic() - went_down
        if restarter.ident is None and elapsed >= OUTAGE - outage.startup:
            timeline.late_in_outage = (executed(), sum(counted(worker).values()))
            restarter.start()
        timeline.poll(worker, went_down)
        if while_down is not None and elapsed >= 1.0:
            while_down()
            while_down = None
        if elapsed - last_scrape >= 1.0:
            last_scrape = elapsed
            began = time.monotonic()
            code = worker.get("/metrics")[0]
            timeline.scrape_seconds.append(time.monotonic() - began)
            assert code == 200, f"/metrics answered {code} during the outage"
            assert worker.status_code("/status") == 200
            timeline.extra_descriptors.append(non_sockets(descriptors(worker)) - baseline)
        time.sleep(0.2)
    restarter.join()
    assert came_up, "the broker did not come back (see the restart thread's error)"
    timeline.down_for = came_up[0] - went_down
    timeline.ran_while_down = executed() - before
    wait_until(lambda: timeline.poll(worker, went_down) == 200, READY_WITHIN,
               "/readyz to say 200 after the broker came back", interval=0.1)
    timeline.ready_after = time.monotonic() - came_up[0]
    return timeline


def check_probes(timeline: Timeline) -> float:
    """Every /healthz said 200; /readyz said 503 from DETECTION s in until the broker was
    back. Returns the seconds /readyz took to say 503."""
    unhealthy = [(round(t, 1), health) for t, health, _ in timeline.answers if health != 200]
    assert not unhealthy, f"/healthz failed during the outage at (s, code): {unhealthy}"
    while_down = [(t, ready) for t, _, ready in timeline.answers
                  if DETECTION <= t < timeline.down_for]
    assert while_down, "no /readyz answer while the broker was away"
    still_ready = [(round(t, 1), ready) for t, ready in while_down if ready != 503]
    assert not still_ready, f"/readyz was not 503 during the outage at (s, code): {still_ready}"
    grew = max(timeline.extra_descriptors, default=0)
    assert grew <= SPARE_DESCRIPTORS, (
        f"the worker's non-socket descriptors grew by {grew} during the outage: "
        f"{timeline.extra_descriptors} (one per /metrics scrape)")
    return next(t for t, _, ready in timeline.answers if ready == 503)


def ride_out(worker: WorkerProcess, outage: Outage, client: Celery, queue: str,
             figure: Figure, pool: str = "prefork", publish_while_down: bool = False,
             spare_sockets: int = 0) -> None:
    """Run the batch across an outage and check every promise of the issue."""
    log = Path(tempfile.mkdtemp(prefix="observe-outage-")) / "executions"
    try:
        _ride_out(worker, outage, client, queue, figure, log, pool, publish_while_down,
                  spare_sockets)
    except (AssertionError, OSError, pytest.fail.Exception):  # OSError: its server is gone
        if KOMBU_CLOSE_CRASH in worker.log():
            pytest.xfail(f"upstream: kombu crashed the worker closing the lost connection "
                         f"({KOMBU_CLOSE_CRASH})")
        raise
    finally:
        shutil.rmtree(log.parent, ignore_errors=True)


def _ride_out(worker: WorkerProcess, outage: Outage, client: Celery, queue: str,
              figure: Figure, log: Path, pool: str, publish_while_down: bool,
              spare_sockets: int) -> None:
    published = publish(client, queue, log, BEFORE)
    wait_until(lambda: len(executions(log)) >= BEFORE // 4, 30, "a quarter of the batch to run")
    worker.metrics()  # the queue-length collector opens its connection on the first scrape
    time.sleep(0.2)
    baseline, baseline_descriptors = footprint(worker, outage.port), descriptors(worker)
    baseline_clients = clients(outage)

    def publish_more() -> None:
        published.extend(publish(client, queue, log, AFTER))

    before = len(executions(log))
    timeline = take_broker_away(
        worker, outage, non_sockets(baseline_descriptors), lambda: len(executions(log)),
        # The broker itself may stay up (a cut connection): then this batch waits in it.
        while_down=publish_more if publish_while_down else None)
    during = timeline.ran_while_down
    if not publish_while_down:
        publish_more()
    noticed = check_probes(timeline)
    # Late in the outage nothing runs. Under prefork, what finished after the main loop
    # stopped to reconnect waits in the pool's result pipe: Celery (and so celery-observe)
    # learns of it when the loop runs again. Other pools report from their own threads.
    ran_by_then, counted_by_then = timeline.late_in_outage
    unreported = ran_by_then - counted_by_then
    assert 0 <= unreported <= (CONCURRENCY if pool == "prefork" else 0), (
        f"while the broker was away, /metrics counted {counted_by_then} outcomes of "
        f"{ran_by_then} executions")

    # Everything published ran, and the broker holds nothing more (no redelivery to come).
    left: dict[str, int] = {}

    def drained() -> bool:
        status = json.loads(worker.get("/status")[2])
        never_ran = len(set(published) - set(executions(log)))
        left.update(never_ran=max(0, never_ran - outage.may_lose_undelivered),
                    in_the_broker=outage.pending(queue), active=status["active_count"],
                    reserved=status["reserved_count"])
        return not any(left.values())
    try:
        wait_until(drained, 30, "every published task to run and the broker to hold nothing",
                   interval=0.25)
    except WaitTimeoutError as error:  # which of the four it was, and what the worker said
        raise WaitTimeoutError(f"{error}: {left}\n{worker.log()[-4000:]}") from None
    with contextlib.suppress(WaitTimeoutError):  # what may stay uncounted is checked below
        wait_until(lambda: sum(counted(worker).values()) >= len(executions(log)), 10,
                   "the last outcomes to be recorded")
    time.sleep(1.0)  # anything still to come would show now
    ran, counts = executions(log), counted(worker)
    times = collections.Counter(ran)
    twice = {task_id: n for task_id, n in times.items() if n > 1}

    # What celery-observe counted is what ran: nothing lost, nothing counted twice, but
    # for the runs Celery's pool flush hid from the main process (see POOL_FLUSH_HIDES).
    hidden = len(ran) - int(sum(counts.values()))
    may_hide = min(len(twice), POOL_FLUSH_HIDES) if pool == "prefork" else 0
    assert 0 <= hidden <= may_hide, (
        f"counted {counts} of {len(ran)} executions ({len(twice)} tasks ran twice)\n"
        f"{worker.log()[-4000:]}")
    assert counts.get("success") == sum(counts.values()), counts
    assert set(times) <= set(published), "tasks ran that nobody published"
    lost = set(published) - set(times)
    worker_log = worker.log()
    assert len(lost) <= outage.may_lose_undelivered and not any(
        task_id in worker_log for task_id in lost), (
        f"never ran: {sorted(lost)}; the worker received "
        f"{sorted(task_id for task_id in lost if task_id in worker_log)} of them")
    # A second execution is a redelivery of a message whose ack the outage ate: one that
    # started as the broker went away, or (a broker forgetting recent acks) before.
    first = 0 if not outage.keeps_acks else max(0, before - 2 * CONCURRENCY)
    around = set(ran[first:before + during + CONCURRENCY])
    assert set(twice) <= around, (
        f"ran twice though not running around the outage: {set(twice) - around}")
    assert all(n == 2 for n in twice.values()), twice

    # No leak: threads, descriptors and broker sockets as before the outage.
    def recovered() -> Footprint | None:
        worker.metrics()  # lets the queue-length collector reconnect, as a scrape would
        time.sleep(0.2)
        now = footprint(worker, outage.port)
        return now if now.back_to(baseline, spare_sockets) else None
    try:
        after = wait_until(recovered, 15, "the worker's footprint to return", interval=0.3)
    except AssertionError:
        now = descriptors(worker)
        pytest.fail(f"leak: before the outage {baseline}, after it "
                    f"{footprint(worker, outage.port)}; descriptors gained "
                    f"{dict(now - baseline_descriptors)}, lost {dict(baseline_descriptors - now)}"
                    f"; broker clients before {baseline_clients}, after {clients(outage)}")

    figure("outage (broker away, s)", f"{timeline.down_for:.1f}")
    figure("/readyz 503 after the broker went away (s)", f"{noticed:.2f}")
    figure("/readyz 200 after the broker came back (s)", f"{timeline.ready_after:.2f}")
    figure("probe answers during the outage (all /healthz 200)", str(len(timeline.answers)))
    figure("/metrics during the outage: scrapes, slowest (s)",
           f"{len(timeline.scrape_seconds)}, {max(timeline.scrape_seconds, default=0):.3f}")
    figure("non-socket descriptors over baseline during the outage, most",
           str(max(timeline.extra_descriptors, default=0)))
    figure("executions not yet on /metrics late in the outage (reported on reconnect)",
           f"{unreported:.0f}")
    figure("executions before / during / after the outage",
           f"{before} / {during} / {len(ran) - before - during}")
    figure("published / executed / counted success",
           f"{len(published)} / {len(ran)} / {counts.get('success', 0):.0f}")
    figure("redelivered (ran twice)", str(len(twice)))
    figure("runs hidden by Celery's pool flush (ran, not reported, redelivered)", str(hidden))
    figure("lost by the transport before delivery (KOMBU_BRPOP_GAP)", str(len(lost)))
    figure("worker main process before the outage", str(baseline))
    figure("worker main process after recovery", str(after))


# --- fixtures and tests -------------------------------------------------------------------

@pytest.fixture
def persistent_redis() -> Iterator[PrivateRedis]:
    """A private redis-server that keeps queued messages across a kill (append-only, fsync)."""
    yield from running(PrivateRedis(persistent=True))


@pytest.fixture
def rabbitmq_node() -> Iterator[tuple[PrivateRabbitMQ, float]]:
    """A started RabbitMQ node of the test's own, and the seconds it took to start."""
    broker_url("rabbitmq")  # skips (or fails on CI) like every broker test
    if not Path(RABBITMQ_SERVER).exists():
        pytest.skip(f"{RABBITMQ_SERVER} is not installed")
    node = PrivateRabbitMQ()
    began = time.monotonic()
    try:
        node.start()
        yield node, time.monotonic() - began
    finally:
        node.kill()
        shutil.rmtree(node.directory, ignore_errors=True)


@contextlib.contextmanager
def producer(url: str, queue: str, **conf: Any) -> Iterator[Celery]:
    app = Celery("outage-client", broker=url, set_as_current=False)
    app.conf.update(broker_connection_retry_on_startup=True, control_exchange=queue, **conf)
    try:
        yield app
    finally:
        app.close()


def outage_worker(url: str, queue: str, pool: str = "prefork") -> WorkerProcess:
    return WorkerProcess(url, queue, pool=pool, concurrency=CONCURRENCY, app=APP)


@pytest.mark.broker
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_redis_outage_loses_and_leaks_nothing(persistent_redis: PrivateRedis, pool: str,
                                               queue_name: str, figure: Figure) -> None:
    """Redis killed for 20 s mid-batch: probes right, every execution counted once, no leak."""
    url = persistent_redis.url()
    spare = THREADS_POOL_SPARE_SOCKETS if pool == "threads" else 0
    with producer(url, queue_name) as client, outage_worker(url, queue_name, pool) as worker:
        ride_out(worker, RedisOutage(persistent_redis), client, queue_name, figure, pool,
                 spare_sockets=spare)


@pytest.mark.broker
def test_rabbitmq_node_outage_loses_and_leaks_nothing(
        rabbitmq_node: tuple[PrivateRabbitMQ, float], queue_name: str,
        figure: Figure) -> None:
    """A private RabbitMQ node killed for 20 s mid-batch: the same promises as Redis."""
    node, startup = rabbitmq_node
    figure("private RabbitMQ node start (s)", f"{startup:.1f}")
    # Publisher confirms: a message the node confirmed is on its disk and survives the kill.
    with producer(node.url(), queue_name,
                  broker_transport_options={"confirm_publish": True}) as client, \
            outage_worker(node.url(), queue_name) as worker:
        ride_out(worker, RabbitNodeOutage(node, startup), client, queue_name, figure)


@pytest.mark.broker
def test_rabbitmq_connection_cut_loses_and_leaks_nothing(queue_name: str,
                                                         figure: Figure) -> None:
    """The worker's connections to the shared RabbitMQ cut for 20 s: the same promises."""
    direct = broker_url("rabbitmq")
    with TCPProxy(("127.0.0.1", 5672)) as proxy, producer(direct, queue_name) as client:
        try:
            with outage_worker(proxy.url(), queue_name) as worker:
                # The publisher talks to RabbitMQ directly, and publishes during the cut.
                ride_out(worker, ProxyOutage(proxy, direct), client, queue_name, figure,
                         publish_while_down=True)
        finally:
            with Connection(direct) as connection, contextlib.suppress(Exception):
                connection.default_channel.queue_delete(queue_name)
        figure("connections the proxy forwarded", str(proxy.accepted))
