"""The views: the monitoring seed's bodies as plain ``JsonResponse``s, from one ``Cluster``.

One :class:`ClusterViews` per ``urls()`` call holds the ``Cluster``, which caches every
answer with the caching seed's TTLs, so however often a load balancer polls, the workers
get one broadcast per TTL. A broker that cannot be reached is an answer, not a 500: health
says unhealthy (503), status says ``connected: false`` (200), the listings are a 503 with
the reason; every message shown has the broker's password masked by the ``Cluster``.

The bodies of the seed's ``/tasks/`` and ``/stats/`` are built here rather than taken from
``celery_observe.cluster.api``, whose package imports FastAPI.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from kombu.exceptions import OperationalError
from typing_extensions import TypedDict

from ...cluster.bodies import task_stats
from ...cluster.client import BrokerUnreachableError
from ...cluster.verdict import UNHEALTHY
from ...shapes import STATUSES, ClusterTasks, utc_timestamp

if TYPE_CHECKING:
    from celery import Celery

    from ...cluster.client import Cluster

#: The Django setting that turns on the endpoints that change something.
TOKEN_SETTING = "CELERY_OBSERVE_API_TOKEN"
MAX_HISTORY_LIMIT = 1000


class RunningTask(TypedDict):
    worker: str
    task_name: str
    task_id: str
    time_start: float | None


class ScheduledEntry(TypedDict):
    worker: str
    task_name: str
    task_id: str
    eta: str | None


class TaskListing(TypedDict):
    """``GET tasks/``: the seed's running and scheduled tasks, and who did not answer."""

    timestamp: str
    running: list[RunningTask]
    scheduled: list[ScheduledEntry]
    running_count: int
    workers: list[str]
    missing: list[str]
    errors: dict[str, str]


def task_listing(tasks: ClusterTasks) -> TaskListing:
    """The seed's ``/api/celery/tasks/`` body from ``Cluster.tasks()``."""
    return TaskListing(
        timestamp=tasks["timestamp"],
        running=[RunningTask(worker=t["worker"], task_name=t["name"], task_id=t["id"],
                             time_start=t.get("time_start")) for t in tasks["running"]],
        scheduled=[ScheduledEntry(worker=t["worker"], task_name=t["name"], task_id=t["id"],
                                  eta=t.get("eta")) for t in tasks["scheduled"]],
        running_count=len(tasks["running"]), workers=tasks["workers"],
        missing=tasks["missing"], errors=tasks["errors"])



def _detail(status: int, detail: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"detail": detail, **extra}, status=status)


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class ClusterViews:
    """The endpoints of one ``urls()`` call, sharing its ``Cluster`` and token."""

    def __init__(self, app: Celery, cluster: Cluster, token: str | None) -> None:
        self.app = app
        self.cluster = cluster
        self.token = token

    def _unreachable(self, exc: BrokerUnreachableError) -> JsonResponse:
        return _detail(503, str(exc), connected=False)

    def health(self, request: HttpRequest) -> HttpResponse:
        """The monitoring seed's verdict: 200 healthy or degraded, 503 unhealthy."""
        verdict = self.cluster.health()
        return JsonResponse(verdict, status=503 if verdict["status"] == UNHEALTHY else 200)

    def status(self, request: HttpRequest) -> HttpResponse:
        """``Cluster.status()`` with ``connected: true``; 200 ``connected: false`` when the
        broker cannot be reached, so a dashboard shows why instead of an error page."""
        try:
            status = self.cluster.status()
        except BrokerUnreachableError as exc:
            return JsonResponse({"connected": False, "error": str(exc),
                                 "broker": self.cluster.broker_url, "timestamp": utc_timestamp()})
        return JsonResponse({"connected": True, **status})

    def tasks(self, request: HttpRequest) -> HttpResponse:
        """Running and scheduled tasks of every worker, as the seed lists them."""
        try:
            return JsonResponse(task_listing(self.cluster.tasks()))
        except BrokerUnreachableError as exc:
            return self._unreachable(exc)

    def stats(self, request: HttpRequest) -> HttpResponse:
        """Running and scheduled counts by task name."""
        try:
            return JsonResponse(task_stats(self.cluster.tasks()))
        except BrokerUnreachableError as exc:
            return self._unreachable(exc)

    def history(self, request: HttpRequest) -> HttpResponse:
        """Finished tasks, newest first: ``?limit=`` (1-1000, 50), ``?task=`` (a name or
        glob), ``?state=`` (success, failure, retry, revoked, rejected); cached like tasks."""
        raw_limit = request.GET.get("limit", "50")
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            return _detail(400, f"limit is a whole number from 1 to {MAX_HISTORY_LIMIT}, "
                                f"got {raw_limit[:50]!r}")
        task = request.GET.get("task") or None
        if task is not None and len(task) > 255:
            return _detail(400, "task is a task name or glob of at most 255 characters")
        state = request.GET.get("state") or None
        if state is not None and state not in STATUSES:
            return _detail(400, f"state is one of {', '.join(STATUSES)}")
        # Not cached by the Cluster (searches vary); cached here per search, so polling a
        # page costs one broadcast per TTL as the other listings do.
        cache = self.cluster.caches.get("task_status")
        try:
            history, _hit = cache.get_or_compute(
                f"history:{limit}:{task!r}:{state!r}",
                lambda: self.cluster.history(limit, task=task, state=state))
        except BrokerUnreachableError as exc:
            return self._unreachable(exc)
        return JsonResponse(history)

    def revoke(self, request: HttpRequest, task_id: str) -> HttpResponse:
        """POST: revoke a task; ``?terminate=true`` also kills it while it runs.

        Needs ``Authorization: Bearer <token>``: 403 while no token is configured, 401 for
        a missing or wrong one. The token replaces CSRF protection here (no cookie is
        involved), so the view is CSRF-exempt.
        """
        if self.token is None:
            return _detail(403, f"revoking tasks is turned off: set {TOKEN_SETTING} in "
                                "settings.py (or urls(token=...)) and send it as "
                                "'Authorization: Bearer <token>'")
        given = _bearer(request)
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            response = _detail(401, "a valid bearer token is required")
            response["WWW-Authenticate"] = "Bearer"
            return response
        flag = request.GET.get("terminate") or request.POST.get("terminate") or ""
        terminate = flag.lower() in ("1", "true", "yes")
        # Its own connection, failing at once when the broker is down (kombu would retry
        # for seconds, holding the request), as the Cluster's broadcasts do.
        options = {**(self.app.conf.broker_transport_options or {}), "max_retries": 0}
        with self.app.connection_for_write(transport_options=options) as connection:
            try:
                self.app.control.revoke(task_id, terminate=terminate, connection=connection)
            except (OSError, OperationalError, *connection.connection_errors) as exc:
                return _detail(503, self.cluster.mask(
                    f"{type(exc).__name__}: {exc} (broker {self.cluster.broker_url})"),
                    connected=False)
        self.cluster.caches.invalidate("task_status")
        return JsonResponse({"task_id": task_id, "revoked": True, "terminate": terminate},
                            status=202)
