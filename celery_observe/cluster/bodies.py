"""The bodies of the seeds' HTTP endpoints, built from the ``Cluster``'s answers.

Shared by the FastAPI router and the Django views, and free of either framework: they
rename and regroup the client's answers into what the seeds' endpoints promise.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import TypedDict

from ..shapes import (
    CacheSetStats,
    ClusterStatus,
    ClusterTask,
    ClusterTasks,
    ProcessResources,
    QueueReport,
    WorkerStatus,
)

#: What a task id may look like: Celery's are UUIDs; custom ids are printable words.
TASK_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}"


class PendingSummary(TypedDict):
    active: int
    reserved: int
    scheduled: int
    total_pending: int


class SeedTask(TypedDict):
    """A task as the metrics guide lists it."""

    worker: str
    task_id: str
    task_name: str
    time_start: float | None
    eta: str | None


class TasksStatus(TypedDict):
    """``GET /tasks/status``."""

    timestamp: str
    summary: PendingSummary
    active_tasks: list[SeedTask]
    reserved_tasks: list[SeedTask]
    scheduled_tasks: list[SeedTask]
    workers: list[str]
    missing: list[str]
    errors: dict[str, str]


class PoolStatus(TypedDict):
    max_concurrency: int | None
    busy_workers: int


class WorkerEntry(TypedDict):
    """One worker of ``GET /workers/status``; a missing one has only name and status."""

    name: str
    status: str
    pool: PoolStatus | None
    pool_type: str | None
    queues: list[str]
    #: The address and port of its own /metrics, as :attr:`metrics_url` joins them.
    http_address: str | None
    http_port: int | None
    metrics_url: str | None
    ready: bool | None
    prefetch_count: int | None
    #: Its main process and pool children, from its last resource sample.
    processes: list[ProcessResources]
    rss_bytes: int | None
    uptime_seconds: float | None


class WorkersStatus(TypedDict):
    """``GET /workers/status``."""

    timestamp: str
    total_workers: int
    online_workers: int
    workers: list[WorkerEntry]


class TaskState(TypedDict):
    """``GET /tasks/{task_id}/status``: the result backend's view, and the workers'."""

    task_id: str
    state: str
    ready: bool
    successful: bool | None
    result: Any
    traceback: str | None
    worker: str | None


class StatsEntry(TypedDict):
    running: int
    scheduled: int


class TaskStats(TypedDict):
    """``GET /stats``: the monitoring seed's counts by task name."""

    total_running: int
    total_scheduled: int
    by_task_name: dict[str, StatsEntry]


class Revoked(TypedDict):
    task_id: str
    revoked: bool
    terminate: bool


class Executed(TypedDict):
    task_id: str
    task_name: str


class Invalidated(TypedDict):
    """``POST /cache/invalidate``, the caching seed's body."""

    timestamp: str
    message: str
    cache_name: str
    invalidated: int


class ScrapeTarget(TypedDict):
    """One entry of Prometheus' HTTP service discovery."""

    targets: list[str]
    labels: dict[str, str]


class ExecuteBody(TypedDict, total=False):
    """What ``POST /tasks/{task_name}/execute`` sends the task; both may be left out."""

    args: list[Any]
    kwargs: dict[str, Any]


class _StatusBody(TypedDict):
    enabled: bool
    connected: bool
    timestamp: str
    broker_url: str


class StatusBody(_StatusBody, total=False):
    """``GET /status``, the status seed's body: ``error`` when the broker cannot be reached,
    the rest when it can."""

    error: str
    workers: list[str]
    missing_workers: list[str]
    active_tasks: int
    scheduled_tasks: int
    reserved_tasks: int
    registered_tasks: list[str]
    worker_stats: dict[str, WorkerStatus]
    queue_details: dict[str, QueueReport]


class SharedCacheStats(TypedDict):
    """This replica's figures of the cache the API's replicas share in Redis."""

    url: str
    available: bool
    faults: int
    caches: dict[str, dict[str, int]]


class _CacheStatsBody(CacheSetStats):
    timestamp: str


class CacheStatsBody(_CacheStatsBody, total=False):
    """``GET /cache/stats``, the caching seed's body; ``shared`` with a shared cache."""

    shared: SharedCacheStats


class ErrorBody(TypedDict):
    """Every 4xx the endpoints raise: what was wrong and how to fix it."""

    detail: str


class BrokerDown(ErrorBody):
    """A 503: the broker cannot be reached, so no worker can be asked."""

    connected: bool


def _target(worker: WorkerStatus) -> str | None:
    """``host:port`` of the worker's own /metrics (an IPv6 host in brackets), if it serves."""
    address = worker["http_address"]
    if worker["http_port"] is None or not address:
        return None
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{worker['http_port']}"


def scrape_targets(status: ClusterStatus) -> list[ScrapeTarget]:
    """Every answering worker that serves /metrics, at the address it advertises."""
    found = []
    for name, worker in sorted(status["workers"].items()):
        target = _target(worker)
        if target is not None:
            found.append(ScrapeTarget(targets=[target], labels={
                "worker": name, "pool": worker["pool"], "queues": ",".join(worker["queues"])}))
    return found


def _seed_task(task: ClusterTask) -> SeedTask:
    return SeedTask(worker=task["worker"], task_id=task["id"], task_name=task["name"],
                    time_start=task.get("time_start"), eta=task.get("eta"))


def tasks_status(tasks: ClusterTasks) -> TasksStatus:
    active, reserved, scheduled = tasks["running"], tasks["reserved"], tasks["scheduled"]
    return TasksStatus(
        timestamp=tasks["timestamp"],
        summary=PendingSummary(active=len(active), reserved=len(reserved),
                               scheduled=len(scheduled),
                               total_pending=len(reserved) + len(scheduled)),
        active_tasks=[_seed_task(t) for t in active],
        reserved_tasks=[_seed_task(t) for t in reserved],
        scheduled_tasks=[_seed_task(t) for t in scheduled],
        workers=tasks["workers"], missing=tasks["missing"], errors=tasks["errors"])


def _online(name: str, worker: WorkerStatus) -> WorkerEntry:
    target = _target(worker)
    return WorkerEntry(
        name=name, status="online",
        pool=PoolStatus(max_concurrency=worker["concurrency"],
                        busy_workers=worker["active_count"]),
        pool_type=worker["pool"], queues=worker["queues"], http_address=worker["http_address"],
        http_port=worker["http_port"], metrics_url=None if target is None
        else f"http://{target}/metrics", ready=worker["ready"],
        # .get: a worker of an older celery-observe (a rolling upgrade) has none of these
        prefetch_count=worker.get("prefetch_count"), processes=worker.get("processes", []),
        rss_bytes=worker.get("rss_bytes"), uptime_seconds=worker.get("uptime_seconds"))


def workers_status(status: ClusterStatus) -> WorkersStatus:
    entries = [_online(name, worker) for name, worker in sorted(status["workers"].items())]
    entries += [WorkerEntry(name=name, status="missing", pool=None, pool_type=None, queues=[],
                            http_address=None, http_port=None, metrics_url=None, ready=None,
                            prefetch_count=None, processes=[], rss_bytes=None,
                            uptime_seconds=None)
                for name in status["missing"]]
    return WorkersStatus(timestamp=status["timestamp"], total_workers=len(entries),
                         online_workers=status["workers_online"], workers=entries)


def task_stats(tasks: ClusterTasks) -> TaskStats:
    by_name: dict[str, StatsEntry] = {}

    def entry(task: ClusterTask) -> StatsEntry:
        return by_name.setdefault(task["name"], StatsEntry(running=0, scheduled=0))

    for task in tasks["running"]:
        entry(task)["running"] += 1
    for task in tasks["scheduled"]:
        entry(task)["scheduled"] += 1
    return TaskStats(total_running=len(tasks["running"]),
                     total_scheduled=len(tasks["scheduled"]),
                     by_task_name=dict(sorted(by_name.items())))


def status_body(status: ClusterStatus, tasks: ClusterTasks,
                registered: list[str]) -> StatusBody:
    """The status seed's body of a cluster the API reached; ``registered`` from its app."""
    return StatusBody(
        enabled=True, connected=True, timestamp=status["timestamp"],
        broker_url=status["broker"], workers=sorted(status["workers"]),
        missing_workers=status["missing"], active_tasks=len(tasks["running"]),
        scheduled_tasks=len(tasks["scheduled"]), reserved_tasks=len(tasks["reserved"]),
        registered_tasks=registered, worker_stats=status["workers"],
        queue_details=status["queues"])
