"""The client side: ask every observed worker at once and put the answers together.

A broadcast returns as soon as every listener the broker counted has replied (Redis), or
soon after every worker this client expects has replied (the workers that replied within
``forget_after`` seconds, or the live ones a :class:`~.hints.WorkerHints` names): it then
waits as long again for workers that joined since (see :mod:`.collect`), so a healthy
cluster answers in milliseconds and a new worker is in the next answer. A call that
neither knows nor can count the workers collects for ``discovery_timeout``.
A worker that stops answering costs one ``timeout`` and is then reported missing until it is
forgotten. Identical concurrent queries share one broadcast (the seeds' TTL caches).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from kombu.exceptions import OperationalError

from ..config import at_least, positive_seconds
from ..faults import FaultLog
from ..named_caches import CacheSet
from ..queues import QueueDepth, QueueReader, configured_queue_names
from ..redaction import Masker, masked_broker_url
from ..shapes import (
    ClusterFinishedTask,
    ClusterHealth,
    ClusterHistory,
    ClusterQueues,
    ClusterStatus,
    ClusterSummary,
    ClusterTask,
    ClusterTasks,
    QueueReport,
    Totals,
    WorkerHealth,
    utc_timestamp,
)
from .collect import broadcast, checks_workers, live_workers
from .hints import MAX_CHECKED, WorkerHints
from .verdict import cluster_health

if TYPE_CHECKING:
    from celery import Celery


T = TypeVar("T")


class BrokerUnreachableError(ConnectionError):
    """The broadcast could not be sent: the broker is down or refuses the connection."""



class Cluster:
    """Status, health, tasks, history and queues of all observed workers of ``app``.

    Queues reported are every queue the app's configuration names (see
    :func:`~.queues.configured_queue_names`), every queue a worker consumes, and ``queues``.
    """

    def __init__(self, app: Celery, *, timeout: float = 1.0, discovery_timeout: float = 0.25,
                 forget_after: float = 60.0, queue_threshold: int = 1000,
                 use_cache: bool = True, queues: Iterable[str] = (),
                 hints: WorkerHints | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.timeout = positive_seconds("Cluster(timeout=...)", timeout)
        self.discovery_timeout = positive_seconds("Cluster(discovery_timeout=...)",
                                                  discovery_timeout)
        self.forget_after = positive_seconds("Cluster(forget_after=...)", forget_after)
        self.queue_threshold = at_least("Cluster(queue_threshold=...)", 0, queue_threshold)
        self.use_cache = use_cache
        self.caches = CacheSet(clock=clock)
        self.mask = Masker.for_app(app)  # every message shown from an exception goes through it
        self.faults = FaultLog(mask=self.mask)
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self.extra_queues = tuple(queues)
        self._queue_reader = QueueReader(app, self.faults, cache=self.caches.get("queue_status"))
        self._broker: Any = None
        self._broker_lock = threading.Lock()
        self.broadcasts = 0  # how many broadcasts this client sent (for tests and tuning)
        #: Which workers to expect while none has replied to this client: used only where
        #: the broker can tell whether each still listens (RabbitMQ; Redis counts them).
        self.hints = hints if hints is not None and checks_workers(app) else None

    # --- talking to the workers -----------------------------------------------------

    def _expected(self) -> set[str]:
        now = self._clock()
        with self._lock:
            for hostname, seen in list(self._seen.items()):
                if now - seen > self.forget_after:
                    del self._seen[hostname]
            return set(self._seen)

    def ask(self, command: str, **arguments: Any) -> tuple[dict[str, Any], list[str]]:
        """Broadcast ``command``; returns (reply per worker, expected workers that were silent)."""
        replies, expected = self._broadcast(command, arguments, self._expected())
        now = self._clock()
        with self._lock:
            for hostname in replies:
                self._seen[hostname] = now
        if self.hints is not None:
            self.hints.save(replies)
        return replies, sorted(expected - set(replies))

    def _connection(self) -> Any:
        """This client's own broker connection (kombu connections are not thread-safe).

        A short ``polling_interval`` makes kombu's Redis transport wait in 50 ms BRPOPs, so
        a collection that ends by timeout returns on time instead of up to a second late.
        """
        if self._broker is None:
            # max_retries 0: a broker that is down fails the call at once (kombu would
            # retry for broker_connection_timeout, 4 s, then some), so `celery observe
            # health` answers "unreachable" in milliseconds; the next call connects anew.
            options = {**(self.app.conf.broker_transport_options or {}),
                       "polling_interval": 0.05, "max_retries": 0}
            self._broker = self.app.connection_for_write(transport_options=options)
        return self._broker

    def _broadcast(self, command: str, arguments: dict[str, Any],
                   expected: set[str]) -> tuple[dict[str, Any], set[str]]:
        """The replies, and the workers expected (the hinted ones when none was known)."""
        with self._broker_lock:
            self.broadcasts += 1
            connection = self._connection()
            try:
                if not expected and self.hints is not None:
                    hinted = self.hints.load()
                    if len(hinted) <= MAX_CHECKED:
                        expected = live_workers(self.app, connection, hinted)
                replies = broadcast(self.app, connection, command, arguments, expected,
                                    self.timeout, self.discovery_timeout)
                return replies, expected
            # kombu reraises a failed connect as its OperationalError, neither an OSError
            # nor one of the transport's connection_errors.
            except (OSError, OperationalError, *connection.connection_errors) as exc:
                self._broker = None
                connection.collect()
                raise BrokerUnreachableError(self._describe_error(exc)) from None

    def _describe_error(self, exc: BaseException) -> str:
        return self.mask(f"{type(exc).__name__}: {exc} (broker {self.broker_url})")

    @property
    def broker_url(self) -> str:
        """The broker URL with its password masked."""
        return masked_broker_url(self.app)

    def _cached(self, cache_name: str, key: str, compute: Callable[[], T]) -> T:
        if not self.use_cache:
            return compute()
        value, _hit = self.caches.get(cache_name).get_or_compute(key, compute)
        return value

    def _data(self, replies: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Split replies into data per worker and errors per worker."""
        data, errors = {}, {}
        for hostname, reply in replies.items():
            if isinstance(reply, dict) and "error" not in reply:
                data[hostname] = reply.get("data", reply)
            else:
                errors[hostname] = self.mask(
                    str(reply.get("error") if isinstance(reply, dict) else reply))
        return data, errors

    # --- what users ask ---------------------------------------------------------------

    def status(self) -> ClusterStatus:
        """Every worker's status plus cluster totals and queues."""
        return self._cached("worker_status", "status", self._status).copy()

    def _status(self) -> ClusterStatus:
        replies, missing = self.ask("observe_status", use_cache=self.use_cache)
        workers, errors = self._data(replies)
        return ClusterStatus(
            timestamp=utc_timestamp(), missing=missing, errors=errors,
            broker=self.broker_url,
            workers_online=len(workers),
            workers=workers,
            totals=Totals(
                active=sum(w.get("active_count", 0) for w in workers.values()),
                reserved=sum(w.get("reserved_count", 0) for w in workers.values()),
                concurrency=sum(w.get("concurrency") or 0 for w in workers.values())),
            queues=self._queue_reports(workers))

    def health(self) -> ClusterHealth:
        """The monitoring seed's verdict (healthy / degraded / unhealthy) with advice."""
        return self._cached("health_check", "health", self._health).copy()

    def _health(self) -> ClusterHealth:
        workers: dict[str, WorkerHealth] = {}
        missing: list[str] = []
        broker_error = None
        try:
            replies, missing = self.ask("observe_health", use_cache=self.use_cache)
            workers, errors = self._data(replies)
            for hostname, error in errors.items():
                workers[hostname] = WorkerHealth(
                    hostname=hostname, alive=True, ready=False, liveness={},
                    readiness={"reason": error}, active_count=0, reserved_count=0, queues=[],
                    internal_errors=0)
        except BrokerUnreachableError as exc:
            broker_error = str(exc)
        queues = {} if broker_error else self._queue_reports(workers)
        verdict = cluster_health(
            workers=workers, missing=missing, queues=queues, broker_error=broker_error,
            queue_threshold=self.queue_threshold,
            start_command=f"celery -A {self.app.main or 'proj'} worker --observe --loglevel=info")
        return ClusterHealth(**verdict, timestamp=utc_timestamp(), details=workers)

    def tasks(self) -> ClusterTasks:
        """Running, reserved and scheduled tasks of every worker, each tagged with its worker."""
        return self._cached("task_status", "tasks", self._tasks).copy()

    def _tasks(self) -> ClusterTasks:
        replies, missing = self.ask("observe_tasks", use_cache=self.use_cache)
        workers, errors = self._data(replies)
        merged: dict[str, list[ClusterTask]] = {"running": [], "reserved": [], "scheduled": []}
        for hostname, lists in sorted(workers.items()):
            for kind, source in (("running", "active"), ("reserved", "reserved"),
                                 ("scheduled", "scheduled")):
                merged[kind].extend(cast(ClusterTask, {"worker": hostname, **task})
                                    for task in lists.get(source, []))
        return ClusterTasks(
            timestamp=utc_timestamp(), missing=missing, errors=errors,
            running=merged["running"], reserved=merged["reserved"],
            scheduled=merged["scheduled"], running_count=len(merged["running"]),
            workers=sorted(workers))

    def history(self, limit: int = 50, *, task: str | None = None, state: str | None = None,
                id_prefix: str | None = None, since: float | None = None,
                until: float | None = None) -> ClusterHistory:
        """The last ``limit`` finished tasks over all workers, newest first.

        Each worker searches its own history, so only matches cross the broker: ``task``
        a name or glob (``proj.billing.*``), ``state`` a status (success, failure, retry,
        revoked, rejected), ``id_prefix`` the start of a task id, ``since``/``until``
        unix seconds of the end.
        """
        search = {name: value for name, value in (
            ("task", task), ("state", state), ("id_prefix", id_prefix), ("since", since),
            ("until", until)) if value is not None}
        replies, missing = self.ask("observe_history", limit=limit, **search)
        workers, errors = self._data(replies)
        entries = [cast(ClusterFinishedTask, {"worker": hostname, **entry})
                   for hostname, items in workers.items() for entry in items]
        entries.sort(key=lambda entry: entry["ended"], reverse=True)
        return ClusterHistory(timestamp=utc_timestamp(), missing=missing, errors=errors,
                              tasks=entries[:limit])

    def summary(self) -> ClusterSummary:
        """Per worker and task name: counts by status, success rate and percentiles."""
        return self._cached("metrics_summary", "summary", self._summary).copy()

    def _summary(self) -> ClusterSummary:
        replies, missing = self.ask("observe_summary", use_cache=self.use_cache)
        workers, errors = self._data(replies)
        return ClusterSummary(timestamp=utc_timestamp(), missing=missing, errors=errors,
                              workers=workers)

    def queues(self) -> ClusterQueues:
        """Every known queue: its depth, the workers consuming it, and whether none does."""
        replies, missing = self.ask("observe_status", use_cache=self.use_cache)
        workers, errors = self._data(replies)
        return ClusterQueues(timestamp=utc_timestamp(), missing=missing, errors=errors,
                             queues=self._queue_reports(workers))

    def _queue_reports(self, workers: dict[str, Any]) -> dict[str, QueueReport]:
        consumers: dict[str, list[str]] = {}
        for hostname, report in sorted(workers.items()):
            for name in report.get("queues", ()):
                consumers.setdefault(name, []).append(hostname)
        names = configured_queue_names(self.app) | set(consumers) | set(self.extra_queues)
        reading = self._queue_reader.read(names, use_cache=self.use_cache)
        reports = {}
        for name in sorted(names):
            depth = reading.depths.get(name) or QueueDepth(name, 0)
            length = reading.length(name)
            reports[name] = QueueReport(
                length=length,
                by_priority={str(step): n for step, n in depth.by_priority.items()},
                oldest_message_age_seconds=depth.oldest_age_seconds,
                consumers=consumers.get(name, []),
                unconsumed=bool(length) and name not in consumers)
        return reports

    def queue_lengths(self, names: Iterable[str]) -> dict[str, int | None]:
        """Messages waiting in each of ``names``: 0 for a queue the broker does not have,
        None for all when the broker could not be asked. Safe to call from many threads."""
        reading = self._queue_reader.read(names, use_cache=self.use_cache)
        return {name: reading.length(name) for name in sorted(set(names))}

    def close(self) -> None:
        """Close this client's broker connections."""
        self._queue_reader.close()
        with self._broker_lock:
            broker, self._broker = self._broker, None
        if broker is not None:
            broker.release()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
