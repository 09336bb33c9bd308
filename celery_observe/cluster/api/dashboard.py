"""The live dashboard: its page at the API's root, its assets, and ``GET /events``.

The page (``celery_observe/cluster/dashboard/``, shipped in the wheel) uses relative URLs
only, so it works under any prefix and behind a proxy that adds one. It learns the cluster
from one Server-Sent Events stream: every ``ApiSettings.events_interval`` seconds a frame
with what the endpoints answer (health, workers, tasks, queues, recent history), built once
for all open pages (:mod:`.events`). The frame also carries the finished-task counts of the
last 15 minutes, kept here in a bounded series, so a page opened now draws its charts at
once and a page left open holds no more than that.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, NamedTuple

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from typing_extensions import TypedDict

from ...shapes import STATUSES, ClusterTask, ClusterTasks, QueueReport, utc_timestamp
from .. import bodies
from ..client import BrokerUnreachableError
from .events import HEARTBEAT_SECONDS, Broadcast, Stream, StreamsFullError, sse_event

if TYPE_CHECKING:
    from .app import ClusterApi

#: The page's files, beside this package in ``celery_observe/cluster/dashboard/``.
ASSET_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "tasks.js": "text/javascript; charset=utf-8",
    "view.js": "text/javascript; charset=utf-8",
}
#: The page runs only its own files and talks only to the API that served it.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
#: The time the charts cover, in seconds.
SERIES_SECONDS = 900
#: Finished tasks a frame carries (the page's "recent tasks" before any search).
HISTORY_SHOWN = 20
#: Waiting (reserved or scheduled) tasks a frame lists; the summary counts them all.
WAITING_SHOWN = 50


class Asset(NamedTuple):
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """The page's files, read once (they are small, and change only with the package)."""
    folder = resources.files("celery_observe.cluster").joinpath("dashboard")
    found = {}
    for name, media_type in ASSET_TYPES.items():
        body = folder.joinpath(name).read_bytes()
        found[name] = Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
    return found


def asset_response(request: Request, asset: Asset) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache",
               "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    if asset.media_type.startswith("text/html"):
        headers["Content-Security-Policy"] = PAGE_POLICY
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


class FrameTask(TypedDict):
    """A running or waiting task as the page lists it; arguments as the worker shows them."""

    id: str
    name: str
    worker: str
    state: str
    time_start: float | None
    eta: str | None
    args: str
    kwargs: str


class FrameTasks(TypedDict):
    summary: bodies.PendingSummary
    active: list[FrameTask]
    #: The first :data:`WAITING_SHOWN` reserved, then scheduled, tasks.
    waiting: list[FrameTask]
    errors: dict[str, str]


class _Frame(TypedDict):
    timestamp: str
    #: Unix seconds when the frame was built, for the page's clock.
    now: float
    interval: float
    heartbeat: float
    connected: bool
    revoke_enabled: bool
    #: ``[unix seconds, success, failure, retry, revoked, rejected]``: tasks finished over
    #: the cluster since the point before, one point per frame, the last 15 minutes.
    series: list[list[float]]


class Frame(_Frame, total=False):
    """One ``snapshot`` event of ``GET /events``; ``error`` instead of the rest when the
    broker cannot be reached."""

    error: str
    health: dict[str, Any]
    workers: bodies.WorkersStatus
    #: Each answering worker's finished tasks by outcome, since it started.
    counts: dict[str, dict[str, int]]
    tasks: FrameTasks
    queues: dict[str, QueueReport]
    history: list[dict[str, Any]]


def _task(task: ClusterTask, state: str) -> FrameTask:
    return FrameTask(id=task["id"], name=task["name"], worker=task.get("worker", ""),
                     state=state, time_start=task.get("time_start"), eta=task.get("eta"),
                     args=task.get("args", ""), kwargs=task.get("kwargs", ""))


def frame_tasks(tasks: ClusterTasks) -> FrameTasks:
    waiting = [_task(t, "reserved") for t in tasks["reserved"][:WAITING_SHOWN]]
    waiting += [_task(t, "scheduled") for t in tasks["scheduled"][:WAITING_SHOWN - len(waiting)]]
    return FrameTasks(summary=bodies.tasks_status(tasks)["summary"],
                      active=[_task(t, "running") for t in tasks["running"]],
                      waiting=waiting, errors=tasks["errors"])


class FinishedSeries:
    """Tasks finished over the cluster between frames, from each worker's running counts.

    A worker seen for the first time adds nothing (its counts are of before); one whose pid
    changed or whose counts went down restarted, and all its counts are new. A gap longer
    than three intervals (no page was open) starts the series' differences afresh.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.points: deque[list[float]] = deque(maxlen=math.ceil(SERIES_SECONDS / interval) + 1)
        self._previous: dict[str, tuple[int, dict[str, int]]] = {}
        self._previous_at: float | None = None

    def add(self, now: float, workers: dict[str, Any], missing: list[str]) -> None:
        current = {name: (worker.get("pid", 0), worker.get("counts") or {})
                   for name, worker in workers.items()}
        if self._previous_at is not None and now - self._previous_at <= 3 * self.interval:
            finished = dict.fromkeys(STATUSES, 0)
            for name, (pid, counts) in current.items():
                if name not in self._previous:
                    continue
                before_pid, before = self._previous[name]
                restarted = pid != before_pid or any(
                    counts.get(s, 0) < before.get(s, 0) for s in STATUSES)
                for status in STATUSES:
                    finished[status] += counts.get(status, 0) - (
                        0 if restarted else before.get(status, 0))
            self.points.append([round(now, 3), *finished.values()])
        # A worker silent for now keeps its counts until the cluster forgets it.
        self._previous = {**{name: self._previous[name] for name in missing
                             if name in self._previous}, **current}
        self._previous_at = now


class Snapshots:
    """Builds the frames of ``GET /events`` from one API's cluster client."""

    def __init__(self, api: ClusterApi, clock: Callable[[], float] = time.time) -> None:
        self._api = api
        self._clock = clock
        self._interval = float(api.settings.events_interval)
        self.series = FinishedSeries(self._interval)
        self._sequence = 0

    def frame(self) -> Frame:
        cluster = self._api.cluster
        now = self._clock()
        try:
            status = cluster.status()
            tasks = cluster.tasks()
            history = cluster.history(HISTORY_SHOWN)
            health = cluster.health()
        except BrokerUnreachableError as exc:
            frame = self._frame(now, connected=False)
            frame["error"] = str(exc)
            return frame
        self.series.add(now, status["workers"], status["missing"])
        frame = self._frame(now, connected=True)
        frame["health"] = {key: value for key, value in health.items() if key != "details"}
        frame["workers"] = bodies.workers_status(status)
        frame["counts"] = {name: dict(worker.get("counts") or {})
                           for name, worker in sorted(status["workers"].items())}
        frame["tasks"] = frame_tasks(tasks)
        frame["queues"] = status["queues"]
        frame["history"] = [dict(entry) for entry in history["tasks"]]
        return frame

    def _frame(self, now: float, *, connected: bool) -> Frame:
        return Frame(timestamp=utc_timestamp(), now=round(now, 3), interval=self._interval,
                     heartbeat=HEARTBEAT_SECONDS, connected=connected,
                     revoke_enabled=self._api.settings.token is not None,
                     series=list(self.series.points))

    def encoded(self) -> bytes:
        """The next frame as one SSE ``snapshot`` message."""
        self._sequence += 1
        data = json.dumps(self.frame(), default=str, separators=(",", ":"))
        return sse_event("snapshot", data, self._sequence)


def add_dashboard(router: APIRouter, api: ClusterApi) -> None:
    """Serve the page at the router's root, its files under ``dashboard/``, and ``events``.

    ``api`` is the router's :class:`~.app.ClusterApi`; the routes inherit the router's read
    access, so a ``read_token`` guards the page's data too.
    """
    assets = load_assets()
    broadcast = Broadcast(Snapshots(api).encoded, api.settings.events_interval)

    @router.get("/", include_in_schema=False)
    def page(request: Request) -> Response:
        return asset_response(request, assets["index.html"])

    @router.get("/dashboard/{name}", include_in_schema=False)
    def asset(request: Request, name: str) -> Response:
        if name not in assets or name == "index.html":
            raise HTTPException(404, detail=f"the dashboard has no file {name!r}")
        return asset_response(request, assets[name])

    # Not in the OpenAPI document: a stream that never ends is no schema to fuzz.
    @router.get("/events", include_in_schema=False)
    async def events() -> Response:
        """The dashboard's frames as Server-Sent Events, one ``snapshot`` per interval."""
        stream = Stream(asyncio.get_running_loop())
        try:
            broadcast.subscribe(stream)
        except StreamsFullError as exc:
            raise HTTPException(503, detail=f"{exc}; retry later",
                                headers={"Retry-After": "30"}) from None

        async def body() -> Any:
            try:
                async for message in stream.messages():
                    yield message
            finally:
                broadcast.unsubscribe(stream)

        return StreamingResponse(body(), media_type="text/event-stream", headers={
            "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


__all__ = ["FinishedSeries", "Frame", "Snapshots", "add_dashboard", "load_assets"]
