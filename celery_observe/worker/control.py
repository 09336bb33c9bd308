"""Remote-control commands: each observed worker answers status queries from its own state.

A client broadcasts ``observe_*`` and every worker replies from memory (through the seeds'
TTL caches), so a cluster-wide status costs one broker round-trip per worker and no
``celery inspect`` timeout. Registering happens on import; the ``celery.commands`` entry
point imports this module, so ``celery -A proj inspect observe_status`` works for any app.

Replies are JSON-safe dicts. Bad arguments get ``{"error": "..."}``; a fault of ours gets
a short error reply and is counted and logged; nothing here can raise into the worker's
remote-control loop.
"""

from __future__ import annotations

import functools
import inspect
import math
import reprlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery.worker.control import control_command, inspect_command

from ..config import parse_bool, whole_number
from ..shapes import STATUSES, CachedReply, DataReply, ErrorReply, InvalidatedReply, Reply
from .history import HistoryFilter

if TYPE_CHECKING:
    from .observer import Observer

NOT_OBSERVED = "celery-observe is not enabled on this worker (start it with --observe)"


def _observer(state: Any) -> Observer | None:
    consumer = getattr(state, "consumer", None)
    return getattr(getattr(consumer, "controller", None), "celery_observe", None)


class BadArgumentError(ValueError):
    """An argument a client sent that the command cannot take."""


def _command(fun: Callable[..., Reply]) -> Callable[..., Reply]:
    """Run ``fun(observer, **arguments)``; turn bad input and faults into error replies.

    Only a client's mistake (arguments that do not fit the signature, or a
    :class:`BadArgumentError`) is answered as bad input; any other exception, a TypeError
    of our own included, is a fault: counted, logged once, answered in general terms.
    """
    signature = inspect.signature(fun)

    @functools.wraps(fun)
    def handler(panel_state: Any, /, **arguments: Any) -> Reply:  # `state` may be an argument
        observer = _observer(panel_state)
        if observer is None:
            return ErrorReply(error=NOT_OBSERVED)
        try:
            bound = signature.bind(observer, **arguments)
        except TypeError as exc:
            return ErrorReply(error=observer.mask(f"{fun.__name__}: {fun.__name__}() {exc}"))
        try:
            return fun(*bound.args, **bound.kwargs)
        except BadArgumentError as exc:
            return ErrorReply(error=observer.mask(f"{fun.__name__}: {exc}"))
        except Exception as exc:  # noqa: BLE001
            observer.faults.report(f"control {fun.__name__}", exc)
            return ErrorReply(error=f"{fun.__name__} failed inside the worker; see its log")

    return handler


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 40


def _shown(value: Any) -> str:
    """``value`` as an error reply quotes it: short, whatever a client sent."""
    return _SHORT.repr(value)


def _use_cache(value: Any) -> bool:
    try:
        return parse_bool(value)
    except ValueError:
        raise BadArgumentError(f"use_cache must be true or false, not {_shown(value)}") from None


def _cached(observer: Observer, cache_name: str, key: str, compute: Callable[[], Any],
            use_cache: Any) -> CachedReply:
    if not _use_cache(use_cache):
        return CachedReply(cache="BYPASS", data=compute())
    cache = observer.caches.get(cache_name)
    value, hit = cache.get_or_compute(key, compute)
    age = cache.age(key) if hit else None
    return CachedReply(cache="HIT" if hit else "MISS", cache_age_seconds=age, data=value)


def _limit(value: Any, maximum: int) -> int:
    try:
        return whole_number(1, maximum, f"limit must be a whole number from 1 to {maximum}")(value)
    except ValueError as exc:
        raise BadArgumentError(f"{exc}, not {_shown(value)}") from None


@inspect_command(name="observe_status", args=[("use_cache", str)], signature="[use_cache=true]")
@_command
def observe_status(observer: Observer, use_cache: Any = True) -> CachedReply:
    """Worker status: pool, concurrency, queues, active tasks, outcome counts."""
    return _cached(observer, "worker_status", "status", observer.status, use_cache)


@inspect_command(name="observe_health", args=[("use_cache", str)], signature="[use_cache=true]")
@_command
def observe_health(observer: Observer, use_cache: Any = True) -> CachedReply:
    """Liveness and readiness of the worker as its probes see them."""
    return _cached(observer, "health_check", "health", observer.health, use_cache)


@inspect_command(name="observe_tasks", args=[("use_cache", str)], signature="[use_cache=true]")
@_command
def observe_tasks(observer: Observer, use_cache: Any = True) -> CachedReply:
    """Active, reserved and scheduled tasks (arguments redacted unless the worker opts in)."""
    return _cached(observer, "task_status", "tasks", observer.tasks, use_cache)


def _text(name: str, value: Any, longest: int = 255) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= longest:
        raise BadArgumentError(f"{name} must be a text of 1 to {longest} characters, "
                               f"not {_shown(value)}")
    return value


def _state(value: Any) -> str | None:
    if value is not None and value not in STATUSES:
        raise BadArgumentError(f"state must be one of {', '.join(STATUSES)}, not {_shown(value)}")
    return value if value is None else str(value)


def _timestamp(name: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds):
        raise BadArgumentError(f"{name} must be unix seconds, not {_shown(value)}")
    return seconds


@inspect_command(name="observe_history",
                 args=[("limit", int), ("task", str), ("state", str), ("id_prefix", str),
                       ("since", float), ("until", float)],
                 signature="[limit=50] [task] [state] [id_prefix] [since] [until]")
@_command
def observe_history(observer: Observer, limit: Any = 50, task: Any = None, state: Any = None,
                    id_prefix: Any = None, since: Any = None, until: Any = None) -> DataReply:
    """The last finished tasks, newest first; optionally only those that match a search."""
    count = _limit(limit, observer.history.size)
    where = HistoryFilter(task=_text("task", task), state=_state(state),
                          id_prefix=_text("id_prefix", id_prefix),
                          since=_timestamp("since", since), until=_timestamp("until", until))
    matched = observer.history.latest(count, where if where != HistoryFilter() else None)
    return DataReply(data=[entry.as_dict() for entry in matched])


@inspect_command(name="observe_summary", args=[("use_cache", str)], signature="[use_cache=true]")
@_command
def observe_summary(observer: Observer, use_cache: Any = True) -> CachedReply:
    """Per task name over the recent history: counts, success rate, p50/p95/p99 duration."""
    return _cached(observer, "metrics_summary", "summary", observer.history.summary, use_cache)


@inspect_command(name="observe_cache_stats")
@_command
def observe_cache_stats(observer: Observer) -> DataReply:
    """Hit, miss and eviction figures of the worker's status caches."""
    return DataReply(data=observer.caches.stats())


@control_command(name="observe_cache_invalidate", args=[("cache_name", str)],
                 signature="[cache_name]")
@_command
def observe_cache_invalidate(observer: Observer,
                             cache_name: str | None = None) -> InvalidatedReply:
    """Drop the worker's cached answers: all caches, or the one named."""
    if cache_name is not None and not isinstance(cache_name, str):
        raise BadArgumentError(f"cache_name must be the name of a cache, not {_shown(cache_name)}")
    if cache_name and cache_name not in observer.caches.names:
        raise BadArgumentError(f"unknown cache name {_shown(cache_name)}; valid names are: "
                          f"{', '.join(observer.caches.names)}")
    removed = observer.caches.invalidate(cache_name or None)
    return InvalidatedReply(ok=f"invalidated {removed} entries", cache_name=cache_name or "all")
