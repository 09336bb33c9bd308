"""Broker queue depths, read on demand through a short TTL cache; no Prometheus in here.

A backlog is the broker's to know, so it is asked, but lazily: only a caller (a scrape in
the worker, a query in a client) triggers a round trip, and a short TTL cache (the seed's
``queue_status`` cache, 3 s) makes a burst of callers cost the broker one per set of queues
asked. The reader owns one connection of its own (a worker's consumer connection is not
thread-safe and must never stall on us), connects on first use, drops it after any error
and reconnects on the next miss. Every broker call is bounded by ``timeout``, and a failed
round trip is cached too, so a dead broker costs each caller at most that long and is not
hammered. Redis spreads a queue over kombu's priority sub-queues, whose separator and steps
are read from the kombu channel (transport options may change them); AMQP and other
transports answer a passive ``queue_declare``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .cache import MetricsCache
from .config import positive_seconds
from .faults import FaultLog
from .task_side.publish import PUBLISHED_AT_HEADER

if TYPE_CHECKING:
    from celery import Celery

#: The FaultLog component under which broker errors are reported.
COMPONENT: Final = "queues"


@dataclass(frozen=True)
class QueueDepth:
    """One queue's backlog as the broker reported it."""

    queue_name: str
    total: int
    #: Messages per kombu priority step (Redis only; empty elsewhere).
    by_priority: dict[int, int] = field(default_factory=dict)
    #: Seconds the oldest waiting message has waited; None when unknowable.
    oldest_age_seconds: float | None = None


class QueueReading(NamedTuple):
    """The answer of one round trip for a set of queues."""

    #: Depth per queue the broker knows; a queue it says does not exist is left out.
    depths: dict[str, QueueDepth]
    #: False when the round trip failed: then ``depths`` is empty and means nothing.
    ok: bool
    read_at: float  # the injected clock at the round trip, to age cached ages

    def length(self, name: str) -> int | None:
        """Messages waiting in ``name``: 0 for a queue the broker does not have, None for
        every queue when the broker could not be asked."""
        if not self.ok:
            return None
        depth = self.depths.get(name)
        return depth.total if depth is not None else 0


def _published_at(raw: bytes | str | None) -> float | None:
    """The stamp in one Redis message payload (headers live inside its JSON), if any."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)["headers"][PUBLISHED_AT_HEADER]
        stamp = float(value)
    except (ValueError, TypeError, KeyError):
        return None
    return None if isinstance(value, bool) or not math.isfinite(stamp) else stamp


def _not_found(exc: BaseException) -> bool:
    """Whether a channel error says the queue does not exist (AMQP 404 or kombu's copy)."""
    return getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc)


def _discard(connection: Any) -> None:
    """Forget ``connection`` without network I/O, closing the descriptor kombu leaves behind.

    kombu's Redis transport holds an epoll descriptor that neither ``collect()`` nor
    ``close()`` closes, and a failed connect leaves the transport in a reference cycle
    (through the exception's traceback), so the descriptor stayed open until the next
    full garbage collection. During a broker outage those come rarely: scraped every
    second, a worker gained 14 descriptors in 90 s, and kept gaining.
    """
    transport = getattr(connection, "_transport", None)  # the property would create one
    with contextlib.suppress(Exception):
        connection.collect()
    poller = getattr(getattr(transport, "cycle", None), "poller", None)
    if poller is not None and callable(getattr(poller, "close", None)):
        with contextlib.suppress(Exception):
            poller.close()


class QueueReader:
    """Depths of the queues a caller names, each set of names cached for the TTL.

    A queue the broker says does not exist (AMQP, passive declare) is left out, not 0 and
    not an error. Redis cannot tell a missing queue from an empty one and reports 0.
    Counts are messages waiting: those a worker has prefetched (unacked) are not in them,
    on either broker. Callers asking different sets at once each get theirs: the cache is
    keyed by the set asked, and concurrent callers of one set share one round trip.
    """

    def __init__(
        self,
        app: Celery,
        faults: FaultLog,
        cache: MetricsCache | None = None,
        ttl: float = 3.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._timeout = positive_seconds("timeout", timeout)
        self._app = app
        self._faults = faults
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache = cache if cache is not None else MetricsCache(
            default_ttl=ttl, max_size=100, clock=clock, name="queue_status")
        self._lock = threading.Lock()  # guards the connection, used by one thread at a time
        self._connection: Any = None
        self._channel: Any = None
        self._is_redis = False
        self._unsupported = False
        self._closed = False
        self._errors = 0
        self._errors_lock = threading.Lock()

    @property
    def errors(self) -> int:
        """Failed broker round trips so far (each cached failure counts once)."""
        with self._errors_lock:
            return self._errors

    def read(self, names: Iterable[str], *, use_cache: bool = True) -> QueueReading:
        """The depths of ``names``, from the cache or one round trip; never raises."""
        wanted = tuple(sorted(set(names)))
        try:
            if use_cache:
                reading, _ = self._cache.get_or_compute(
                    "\n".join(wanted), lambda: self._read(wanted))
            else:
                reading = self._read(wanted)
            elapsed = max(0.0, self._clock() - reading.read_at)
        except Exception as exc:  # noqa: BLE001 - a caller degrades, it never raises
            self._faults.report(COMPONENT, exc)
            return QueueReading({}, False, self._clock())
        return reading._replace(depths={
            name: depth if depth.oldest_age_seconds is None else dataclasses.replace(
                depth, oldest_age_seconds=depth.oldest_age_seconds + elapsed)
            for name, depth in reading.depths.items()
        })

    def measure(self, names: Iterable[str], *, use_cache: bool = True) -> dict[str, QueueDepth]:
        """Depth per queue the broker knows; {} when it could not be asked."""
        return self.read(names, use_cache=use_cache).depths

    def _read(self, names: tuple[str, ...]) -> QueueReading:
        """The cache's compute: a failure is cached like a value, so the broker rests."""
        try:
            depths = self.read_broker(names) if names else {}
        except Exception as exc:  # noqa: BLE001 - counted and reported, the caller goes on
            with self._errors_lock:
                self._errors += 1
            self._faults.report(COMPONENT, exc)
            return QueueReading({}, False, self._clock())
        return QueueReading(depths, True, self._clock())

    # --- broker side ------------------------------------------------------------------

    def read_broker(self, queue_names: Sequence[str]) -> dict[str, QueueDepth]:
        """One broker round trip for all ``queue_names``; raises on broker errors."""
        with self._lock:
            if self._closed or self._unsupported:
                return {}
            try:
                channel = self._ensure_channel()
                if self._is_redis:
                    return self._read_redis(channel, queue_names)
                return self._read_passive(queue_names)
            except Exception:
                self._drop()
                raise

    def close(self) -> None:
        """Close the connection for good; idempotent and silent."""
        with self._lock:
            self._closed = True
            connection, self._connection, self._channel = self._connection, None, None
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.release()

    def _ensure_channel(self) -> Any:
        if self._channel is not None:
            return self._channel
        # The class, not an instance: a Redis transport opens an epoll descriptor, which a
        # failed connect below would keep alive through the traceback (see _discard).
        # Its driver names tell the transport apart without importing a broker client this
        # worker does not use (kombu's Redis transport needs packaging, which a bare install
        # of kombu lacks, so importing it took down workers on AMQP).
        transport = self._app.connection_for_read().get_transport_cls()
        self._is_redis = transport.driver_type == "redis"
        seconds = self._timeout
        options: dict[str, float] = {}
        if self._is_redis:
            options = {"socket_timeout": seconds, "socket_connect_timeout": seconds}
        elif transport.driver_name == "py-amqp":
            options = {"read_timeout": seconds, "write_timeout": seconds}
        connection = self._app.connection_for_read(
            connect_timeout=seconds, transport_options=options)
        try:
            connection.ensure_connection(max_retries=0)  # connect() would retry after 2 s
            channel = connection.channel()
        except Exception:
            _discard(connection)
            raise
        self._connection, self._channel = connection, channel
        return channel

    def _drop(self) -> None:
        """Forget a connection that failed, without network I/O (the broker may be gone)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            _discard(connection)

    def _read_redis(self, channel: Any, names: Sequence[str]) -> dict[str, QueueDepth]:
        """LLEN and the consuming end (LPUSH in, BRPOP/RPOP out: index -1) of every sub-queue.

        One pipelined MULTI/EXEC, so lengths and tails are one consistent snapshot.
        """
        steps = list(dict.fromkeys(int(step) for step in channel.priority_steps))
        keys = [channel._q_for_pri(name, step) for name in names for step in steps]
        client = channel.client
        prefix = ""  # kombu prefixes LLEN for us, but not LINDEX (kombu 5.7)
        if channel.global_keyprefix and "LINDEX" not in getattr(
                client, "PREFIXED_SIMPLE_COMMANDS", ()):
            prefix = channel.global_keyprefix
        with client.pipeline() as pipe:
            for key in keys:
                pipe.llen(key)
            for key in keys:
                pipe.lindex(prefix + key, -1)
            replies = pipe.execute()
        lengths, tails = replies[: len(keys)], replies[len(keys):]
        now = self._wall_clock()
        depths = {}
        for index, name in enumerate(names):
            part = slice(index * len(steps), (index + 1) * len(steps))
            counts = {step: int(count) for step, count in zip(steps, lengths[part], strict=True)}
            stamps = [s for s in map(_published_at, tails[part]) if s is not None]
            age = max(0.0, now - min(stamps)) if stamps else None
            depths[name] = QueueDepth(name, sum(counts.values()), counts, age)
        return depths

    def _read_passive(self, names: Sequence[str]) -> dict[str, QueueDepth]:
        """A passive declare per queue: its count, without creating or consuming anything."""
        deadline = time.monotonic() + self._timeout
        depths = {}
        for name in names:
            if time.monotonic() > deadline:
                msg = (f"measuring {len(names)} queues took over {self._timeout} s; the broker "
                       f"is too slow, or raise the queue-length timeout")
                raise TimeoutError(msg)
            try:
                declared = self._channel.queue_declare(queue=name, passive=True)
            except NotImplementedError:
                self._unsupported = True  # this transport cannot tell: report nothing
                return {}
            except self._connection.channel_errors as exc:
                if not _not_found(exc):
                    raise
                if not getattr(self._channel, "is_open", True):  # AMQP closes it on 404
                    self._channel = self._connection.channel()
                continue
            depths[name] = QueueDepth(name, int(declared.message_count))
        return depths


def _queue_name(route: Any) -> str | None:
    """The queue a ``task_routes`` entry or a ``Task.queue`` sends to, when it names one."""
    if isinstance(route, str):
        return route
    if isinstance(route, dict):
        route = route.get("queue")
        return route if isinstance(route, str) else getattr(route, "name", None)
    name = getattr(route, "name", None)  # a kombu Queue
    return name if isinstance(name, str) else None


def configured_queue_names(app: Celery) -> set[str]:
    """Every queue the app's configuration sends tasks to, whether or not a worker consumes it.

    ``task_default_queue``, ``task_queues``, the static routes of ``task_routes`` (a mapping,
    or a list of mappings and ``(pattern, route)`` pairs; router functions cannot be read)
    and the ``queue`` of each registered task. A typo in one of these is how tasks end up in
    a queue no worker consumes.
    """
    conf = app.conf
    names = {conf.task_default_queue}
    queues = conf.task_queues or ()
    names.update(queues if isinstance(queues, dict) else (_queue_name(q) for q in queues))
    routes = conf.task_routes or ()
    for table in [routes] if isinstance(routes, dict) else routes:
        if isinstance(table, dict):
            names.update(_queue_name(route) for route in table.values())
        elif isinstance(table, (list, tuple)) and len(table) == 2:
            names.add(_queue_name(table[1]))
    names.update(_queue_name(getattr(task, "queue", None)) for task in app.tasks.values())
    return {name for name in names if name}
