"""The shapes of what crosses a process boundary: remote-command replies and client answers.

One module, so the worker that builds a reply, the client that merges replies, the CLI
that prints them, and the cluster API's schema read the same definitions. All are JSON
values (TypedDicts of str, numbers, None, lists and dicts).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Final, Literal

# typing_extensions, not typing: pydantic (the cluster API's schema) reads only its TypedDict
# before Python 3.12. Celery already installs it (through click-repl).
from typing_extensions import TypedDict

#: Every value of the ``status`` label of ``celery_task_total`` (and a history entry's state).
STATUSES: tuple[str, ...] = ("success", "failure", "retry", "revoked", "rejected")

# --- what one worker answers (the ``data`` of an ``observe_*`` reply) --------------------


class ActiveTask(TypedDict):
    """A task executing now, in ``observe_status``: never its arguments."""

    id: str
    name: str
    worker_pid: int | None
    runtime_seconds: float | None


class ProcessResources(TypedDict):
    """One process of the worker in ``observe_status``, from the last resource sample."""

    pid: int
    role: Literal["main", "child"]
    rss_bytes: int
    #: User plus system CPU time the process has used since it started.
    cpu_seconds: float


class WorkerStatus(TypedDict):
    """``observe_status``: one worker's picture."""

    hostname: str | None
    pid: int
    pool: str
    concurrency: int | None
    celery_version: str
    queues: list[str]
    #: Where others reach its /metrics: the bound address, or this host's primary IP
    #: when it listens on every interface. None while it does not serve.
    http_address: str | None
    http_port: int | None
    active: list[ActiveTask]
    active_count: int
    reserved_count: int
    counts: dict[str, int]
    ready: bool
    #: Seconds since celery-observe started in this worker; None before it started.
    uptime_seconds: float | None
    #: Messages the consumer may hold unacknowledged now (its QoS value); None before it
    #: consumes.
    prefetch_count: int | None
    #: The main process, then each pool child, as the last resource sample saw them (up
    #: to ``resource_interval`` old); empty before the first sample.
    processes: list[ProcessResources]
    #: The sum of ``processes``' RSS; None before the first sample.
    rss_bytes: int | None


class WorkerHealth(TypedDict):
    """``observe_health``: the worker's own probes, for the cluster's verdict."""

    hostname: str | None
    alive: bool
    ready: bool
    liveness: dict[str, Any]
    readiness: dict[str, Any]
    active_count: int
    reserved_count: int
    queues: list[str]
    internal_errors: int


class TaskInfo(TypedDict):
    """A running or waiting task in ``observe_tasks``; arguments redacted unless shown."""

    id: str
    name: str
    worker_pid: int | None
    time_start: float | None
    args: str
    kwargs: str


class ScheduledTask(TaskInfo):
    """A task waiting for its ETA or countdown."""

    eta: str | None


class WorkerTasks(TypedDict):
    """``observe_tasks``: active, reserved (prefetched, not started) and scheduled tasks."""

    active: list[TaskInfo]
    reserved: list[TaskInfo]
    scheduled: list[ScheduledTask]


class FinishedTaskEntry(TypedDict):
    """One entry of ``observe_history``; unix seconds."""

    id: str | None
    name: str
    state: str
    started: float | None
    ended: float
    error_type: str | None
    duration_seconds: float | None


class Percentiles(TypedDict):
    p50: float | None
    p95: float | None
    p99: float | None


class TaskSummary(TypedDict):
    """Per task name in ``observe_summary``, over the worker's history window."""

    counts: dict[str, int]
    success_rate_percent: float | None
    duration_seconds: Percentiles


class CacheStats(TypedDict):
    """One cache's figures, the caching seed's fields."""

    size: int
    max_size: int
    utilization_percent: float
    hits: int
    misses: int
    hit_rate_percent: float
    sets: int
    evictions: int
    expirations: int
    invalidations: int
    total_requests: int


class CacheSummary(TypedDict):
    total_hits: int
    total_misses: int
    total_requests: int
    overall_hit_rate_percent: float


class CacheSetStats(TypedDict):
    """``observe_cache_stats``: every named cache and their sum."""

    caches: dict[str, CacheStats]
    summary: CacheSummary


class DataReply(TypedDict):
    """A command's answer; ``data`` has the shape :data:`COMMAND_DATA` names."""

    data: Any


class _CachedReply(DataReply):
    cache: Literal["HIT", "MISS", "BYPASS"]


class CachedReply(_CachedReply, total=False):
    """A reply served through a worker's cache; ``cache_age_seconds`` with HIT and MISS."""

    cache_age_seconds: float | None


class InvalidatedReply(TypedDict):
    """``observe_cache_invalidate``: how many entries went, from which cache (or "all")."""

    ok: str
    cache_name: str


class ErrorReply(TypedDict):
    """Bad input, a fault of ours, or a worker that is not observed."""

    error: str


Reply = DataReply | CachedReply | InvalidatedReply | ErrorReply

#: The shape of the ``data`` of each command's reply.
COMMAND_DATA: Final[Mapping[str, object]] = MappingProxyType({
    "observe_status": WorkerStatus,
    "observe_health": WorkerHealth,
    "observe_tasks": WorkerTasks,
    "observe_history": list[FinishedTaskEntry],
    "observe_summary": dict[str, TaskSummary],
    "observe_cache_stats": CacheSetStats,
})


# --- what a client answers ----------------------------------------------------------------


class QueueReport(TypedDict):
    """One queue as a client sees it: its depth and who consumes it."""

    #: Messages waiting (Redis: every priority); None when the broker could not be asked.
    length: int | None
    #: Messages per kombu priority step, Redis only.
    by_priority: dict[str, int]
    #: Age of the next message to be consumed, when its producer stamped a publish time.
    oldest_message_age_seconds: float | None
    #: The workers that answered and consume this queue.
    consumers: list[str]
    #: Messages wait and no worker that answered consumes the queue: they will not run.
    unconsumed: bool


def utc_timestamp() -> str:
    """Now, as every answer's ``timestamp`` carries it: ISO 8601 in UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Answer(TypedDict):
    """What every client answer carries: when, which workers went silent, which erred."""

    timestamp: str
    missing: list[str]
    errors: dict[str, str]


class Totals(TypedDict):
    active: int
    reserved: int
    concurrency: int


class ClusterStatus(_Answer):
    """``Cluster.status()``."""

    broker: str
    workers_online: int
    workers: dict[str, WorkerStatus]
    totals: Totals
    queues: dict[str, QueueReport]


class ClusterQueues(_Answer):
    """``Cluster.queues()``."""

    queues: dict[str, QueueReport]


class ClusterTask(TaskInfo, total=False):
    """A task of ``Cluster.tasks()``: the worker it is on; ``eta`` when scheduled."""

    worker: str
    eta: str | None


class ClusterTasks(_Answer):
    """``Cluster.tasks()``: every worker's tasks, each tagged with its worker."""

    running: list[ClusterTask]
    reserved: list[ClusterTask]
    scheduled: list[ClusterTask]
    running_count: int
    workers: list[str]


class ClusterFinishedTask(FinishedTaskEntry):
    worker: str


class ClusterHistory(_Answer):
    """``Cluster.history()``: newest first, over all workers."""

    tasks: list[ClusterFinishedTask]


class ClusterSummary(_Answer):
    """``Cluster.summary()``: per worker, per task name."""

    workers: dict[str, dict[str, TaskSummary]]


class _HealthWorkers(TypedDict):
    healthy: bool
    active_workers: list[str]
    worker_count: int


class HealthWorkers(_HealthWorkers, total=False):
    """The monitoring seed's ``workers`` block; ``error`` when unhealthy."""

    error: str


VerdictStatus = Literal["healthy", "degraded", "unhealthy"]


class _Verdict(TypedDict):
    status: VerdictStatus
    message: str
    broker_connected: bool
    workers: HealthWorkers
    #: The seed's queue depths: -1 where the broker could not be asked.
    queues: dict[str, int]
    unconsumed_queues: list[str]
    recommendations: list[str]


class Verdict(_Verdict):
    """The cluster's health verdict, as :func:`~.cluster.verdict.cluster_health` decides it."""


class ClusterHealth(Verdict):
    """``Cluster.health()``: the verdict, when, and each worker's own report."""

    timestamp: str
    details: dict[str, WorkerHealth]
