"""The endpoints: every seed's body, from one long-lived ``Cluster`` and the seed's caches.

Reads are answered from the caching layer (one broadcast per endpoint and TTL, however
many clients poll); ``use_cache=false`` bypasses it, within the per-client rate limit.
Endpoints that change something need the token and are off without one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from celery import Celery
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import Response

from ...named_caches import CACHE_SPECS
from ...shapes import (
    STATUSES,
    ClusterHealth,
    ClusterHistory,
    ClusterQueues,
    ClusterSummary,
    utc_timestamp,
)
from .. import bodies
from ..client import BrokerUnreachableError, Cluster
from ..verdict import UNHEALTHY
from .access import RateLimiter, require_token
from .caching import ResponseCache, json_response
from .metrics import ApiMetrics
from .settings import ApiSettings
from .task_results import backend_enabled, task_state

UseCache = Query(True, description="false: compute a fresh answer (rate limited)")
TaskId = Path(pattern=f"^{bodies.TASK_ID_PATTERN}$",
              description="Celery's UUID, or a custom id: 1 to 255 letters, digits and "
                          ". _ : @ -, starting with a letter or digit")
ExecuteArguments = Body(None, description="the task's arguments; none when left out")
#: A Prometheus page: the text format, or OpenMetrics when the scraper asks for it.
METRICS_PAGE = {"content": {kind: {"schema": {"type": "string"}}
                            for kind in ("text/plain", "application/openmetrics-text")}}

#: Every answer other than the 2xx an endpoint may give, for the OpenAPI document.
ANSWERS: dict[int, dict[str, Any]] = {
    304: {"description": "Not Modified: If-None-Match named the current ETag"},
    400: {"model": bodies.ErrorBody, "description": "an unknown cache name; the valid ones"},
    401: {"model": bodies.ErrorBody,
          "description": "a token is configured and the request did not bring it"},
    403: {"model": bodies.ErrorBody, "description": "turned off: no token is configured"},
    404: {"model": bodies.ErrorBody, "description": "no result backend or worker knows it"},
    429: {"model": bodies.ErrorBody,
          "description": "over the per-client rate limit of uncached or changing requests"},
    503: {"model": bodies.BrokerDown, "description": "the broker cannot be reached"},
}


def answers(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """The documented non-2xx answers ``codes``; ``described`` rewords some (``_403=``)."""
    found: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        found[code] = {**ANSWERS[code]}
        if f"_{code}" in described:
            found[code]["description"] = described[f"_{code}"]
    return found


#: A cached read: a 304 for a current ETag, a 429 when uncached too often, a 503 without
#: a broker; 401 behind a read token.
READ = (304, 401, 429, 503)


class ClusterApi:
    """What one mounted API owns: its Cluster client, caches and rate limiter."""

    def __init__(self, app: Celery, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings
        self.cluster = Cluster(app, timeout=settings.timeout,
                               discovery_timeout=settings.discovery_timeout,
                               forget_after=settings.forget_after,
                               queue_threshold=settings.queue_threshold, use_cache=False,
                               queues=settings.queues)
        self.responses = ResponseCache.for_settings(settings)
        self.limiter = RateLimiter(settings.rate_limit_per_minute)

    async def read_access(self, request: Request) -> None:
        """Every endpoint's dependency: async, as it never blocks, so a cached answer
        costs one thread hop (the endpoint's), not two."""
        if self.settings.read_token is not None:
            require_token(request, self.settings.read_token, purpose="reading")

    def write_access(self, purpose: str) -> Any:
        """A dependency that needs the token: checked before the request body is read."""
        async def check(request: Request) -> None:
            require_token(request, self.settings.token, purpose=purpose)
        return Depends(check)

    def answer(self, request: Request, cache_name: str, key: str,
               compute: Callable[[], tuple[int, Any]], use_cache: bool) -> Response:
        """A cached answer; a broker that cannot be reached is a 503 with the reason."""
        if not use_cache:
            self.limiter.check(request)

        def guarded() -> tuple[int, Any]:
            try:
                return compute()
            except BrokerUnreachableError as exc:
                return 503, {"detail": str(exc), "connected": False}

        return self.responses.respond(request, cache_name, key, guarded, use_cache)

    def close(self) -> None:
        """The broker connection and the shared cache's Redis client, at the app's shutdown."""
        self.cluster.close()
        if self.responses.shared is not None:
            self.responses.shared.close()


def observe_router(app: Celery, settings: ApiSettings | None = None) -> APIRouter:
    """The cluster API as a router to ``include_router`` into a FastAPI app (any prefix)."""
    api = ClusterApi(app, settings or ApiSettings())

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        api.close()

    snapshots = api.responses.caches.get("worker_status")
    metrics = ApiMetrics(lambda: snapshots.get_or_compute("metrics", api.cluster.status)[0],
                         api.responses.caches)
    router = APIRouter(dependencies=[Depends(api.read_access)], lifespan=lifespan,
                       tags=["celery-observe"], route_class=metrics.route_class())

    @router.get("/metrics", response_class=Response,
                responses={200: METRICS_PAGE, **answers(401)})
    def prometheus(request: Request) -> Response:
        """The cluster as one Prometheus target: workers, every queue's depth and consumers,
        and this API's requests and caches (not the workers' task series)."""
        return metrics.response(request)

    @router.get("/prometheus/targets", response_model=list[bodies.ScrapeTarget],
                responses=answers(*READ))
    def prometheus_targets(request: Request, use_cache: bool = UseCache) -> Response:
        """Prometheus HTTP service discovery: each worker's own /metrics, with labels."""
        return api.answer(request, "worker_status", "targets",
                          lambda: (200, bodies.scrape_targets(api.cluster.status())), use_cache)

    @router.get("/health", response_model=ClusterHealth, responses={
        **answers(304, 401, 429),
        503: {"model": ClusterHealth, "description": "unhealthy: no worker, or no broker"}})
    def health(request: Request, use_cache: bool = UseCache) -> Response:
        """The monitoring seed's verdict: 200 healthy or degraded, 503 unhealthy."""
        def compute() -> tuple[int, Any]:
            verdict = api.cluster.health()
            return (503 if verdict["status"] == UNHEALTHY else 200), verdict
        return api.answer(request, "health_check", "health", compute, use_cache)

    @router.get("/status", response_model=bodies.StatusBody, responses=answers(304, 401, 429))
    def status(request: Request, use_cache: bool = UseCache) -> Response:
        """The status seed's full body; ``connected: false`` with the error if the broker is
        down (never a 500)."""
        def compute() -> tuple[int, Any]:
            # Two broadcasts: observe_status counts active and reserved tasks, but only
            # observe_tasks knows the scheduled ones the seed's body counts.
            try:
                cluster = api.cluster.status()
                tasks = api.cluster.tasks()
            except BrokerUnreachableError as exc:
                return 200, bodies.StatusBody(
                    enabled=True, connected=False, error=str(exc),
                    broker_url=api.cluster.broker_url, timestamp=utc_timestamp())
            return 200, bodies.status_body(cluster, tasks, sorted(
                name for name in app.tasks if not name.startswith("celery.")))
        return api.answer(request, "worker_status", "status", compute, use_cache)

    @router.get("/workers/status", response_model=bodies.WorkersStatus,
                responses=answers(*READ))
    def workers_status(request: Request, use_cache: bool = UseCache) -> Response:
        """Every worker online or missing, with its pool, queues and endpoint."""
        return api.answer(request, "worker_status", "workers",
                          lambda: (200, bodies.workers_status(api.cluster.status())), use_cache)

    @router.get("/tasks/status", response_model=bodies.TasksStatus, responses=answers(*READ))
    def tasks_status(request: Request, use_cache: bool = UseCache) -> Response:
        """Active, reserved and scheduled tasks of every worker, with the pending totals."""
        return api.answer(request, "task_status", "tasks",
                          lambda: (200, bodies.tasks_status(api.cluster.tasks())), use_cache)

    @router.get("/queues/status", response_model=ClusterQueues, responses=answers(*READ))
    def queues_status(request: Request, use_cache: bool = UseCache) -> Response:
        """Every configured or consumed queue: depth, consumers, unconsumed flag."""
        return api.answer(request, "queue_status", "queues",
                          lambda: (200, api.cluster.queues()), use_cache)

    @router.get("/metrics/summary", response_model=ClusterSummary, responses=answers(*READ))
    def metrics_summary(request: Request, use_cache: bool = UseCache) -> Response:
        """Per worker and task name: counts, success rate, p50/p95/p99 duration."""
        return api.answer(request, "metrics_summary", "summary",
                          lambda: (200, api.cluster.summary()), use_cache)

    @router.get("/stats", response_model=bodies.TaskStats, responses=answers(*READ))
    def stats(request: Request, use_cache: bool = UseCache) -> Response:
        """The monitoring seed's running and scheduled counts by task name."""
        return api.answer(request, "task_status", "stats",
                          lambda: (200, bodies.task_stats(api.cluster.tasks())), use_cache)

    @router.get("/tasks", response_model=ClusterHistory, responses=answers(*READ))
    def history(request: Request, limit: int = Query(50, ge=1, le=1000),
                task: str | None = Query(None, min_length=1, max_length=255,
                                         description="a task name or glob"),
                state: str | None = Query(None, pattern=f"^({'|'.join(STATUSES)})$"),
                id_prefix: str | None = Query(None, min_length=1, max_length=255),
                since: float | None = None, until: float | None = None,
                use_cache: bool = UseCache) -> Response:
        """Recent finished tasks over all workers, newest first, with search."""
        key = f"history:{limit}:{(task, state, id_prefix, since, until)!r}"
        return api.answer(request, "task_status", key, lambda: (200, api.cluster.history(
            limit, task=task, state=state, id_prefix=id_prefix, since=since, until=until)),
            use_cache)

    @router.get("/tasks/{task_id}/status", response_model=bodies.TaskState,
                responses=answers(*READ, 404))
    def task_status(request: Request, task_id: str = TaskId,
                    use_cache: bool = UseCache) -> Response:
        """The result backend's state of one task, and the worker holding it."""

        def compute() -> tuple[int, Any]:
            found = task_state(app, task_id, api.cluster.tasks(),
                               api.cluster.history(1, id_prefix=task_id),
                               show_results=api.settings.show_results, mask=api.cluster.mask)
            if found is None:
                backend = "" if backend_enabled(app) else " (the app has no result backend)"
                return 404, {"detail": f"no worker or result backend knows task {task_id}"
                                       f"{backend}"}
            return 200, found
        return api.answer(request, "task_status", f"task:{task_id}", compute, use_cache)

    @router.post("/tasks/{task_id}/revoke", response_model=bodies.Revoked, status_code=202,
                 dependencies=[api.write_access("revoking tasks")],
                 responses=answers(401, 403, 429))
    def revoke(request: Request, task_id: str = TaskId, terminate: bool = False) -> Response:
        """Revoke a waiting task, or with ``terminate=true`` kill it while it runs."""
        api.limiter.check(request)
        app.control.revoke(task_id, terminate=terminate)
        api.responses.caches.invalidate("task_status")
        return json_response(202, bodies.Revoked(task_id=task_id, revoked=True,
                                                 terminate=terminate))

    @router.post("/tasks/{task_name}/execute", response_model=bodies.Executed, status_code=202,
                 dependencies=[api.write_access("executing tasks")],
                 responses=answers(400, 401, 403, 429, _400="the body is not UTF-8 text",
                                   _403="turned off: no token is configured; or the task "
                                   "is not on the execute allowlist"))
    def execute(request: Request, task_name: str,
                body: bodies.ExecuteBody | None = ExecuteArguments) -> Response:
        """Send a task on the allowlist with ``{"args": [...], "kwargs": {...}}``."""
        if task_name not in api.settings.execute_allowlist:
            raise HTTPException(403, detail=f"task {task_name!r} is not on the execute "
                                "allowlist (ApiSettings(execute_allowlist=...))")
        api.limiter.check(request)
        sent = app.send_task(task_name, args=(body or {}).get("args", []),
                             kwargs=(body or {}).get("kwargs", {}))
        return json_response(202, bodies.Executed(task_id=sent.id, task_name=task_name))

    @router.get("/cache/stats", response_model=bodies.CacheStatsBody, responses=answers(401))
    def cache_stats() -> Response:
        """The caching seed's figures of this API's five caches."""
        return json_response(200, {"timestamp": utc_timestamp(), **api.responses.caches.stats()})

    @router.post("/cache/invalidate", response_model=bodies.Invalidated,
                 dependencies=[api.write_access("invalidating caches")],
                 responses=answers(400, 401, 403))
    def cache_invalidate(cache_name: str | None = None) -> Response:
        """Empty one cache, or all; an unknown name is a 400 listing the valid ones."""
        if cache_name is not None and cache_name not in CACHE_SPECS:
            raise HTTPException(400, detail=f"unknown cache_name; valid names are: "
                                f"{', '.join(CACHE_SPECS)}")
        removed = api.responses.caches.invalidate(cache_name)
        message = (f"Cache {cache_name} invalidated" if cache_name
                   else "All monitoring caches invalidated")
        return json_response(200, bodies.Invalidated(
            timestamp=utc_timestamp(), message=message, cache_name=cache_name or "all",
            invalidated=removed))

    from .dashboard import add_dashboard  # the live page at the router's root, GET /events

    add_dashboard(router, api)
    return router


def create_app(app: Celery, settings: ApiSettings | None = None,
               prefix: str = "/api/v1/celery") -> FastAPI:
    """A FastAPI app serving the cluster API at ``prefix`` (what ``observe serve`` runs)."""
    web = FastAPI(title="celery-observe", description="The cluster of observed Celery workers.")
    web.include_router(observe_router(app, settings), prefix=prefix)
    return web


__all__ = ["ClusterApi", "create_app", "observe_router"]
