"""The caching seed's five named caches, one per kind of status answer, tuned to volatility.

A worker answers remote commands through its own set, a client caches its answers in its
own; the process-wide accessors are the seed's API for code that wants one shared set.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable, Mapping
from typing import Any, Final

from .cache import MetricsCache, percent

#: The seed's caches: name -> (ttl seconds, max entries), tuned to data volatility.
CACHE_SPECS: Final[Mapping[str, tuple[float, int]]] = types.MappingProxyType(
    {
        "task_status": (2.0, 500),
        "worker_status": (5.0, 100),
        "queue_status": (3.0, 100),
        "metrics_summary": (5.0, 100),
        "health_check": (10.0, 50),
    }
)

class CacheSet:
    """The five monitoring caches of the seed, one per kind of endpoint."""

    def __init__(
        self,
        overrides: Mapping[str, tuple[float, int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        specs = dict(CACHE_SPECS)
        for name, spec in (overrides or {}).items():
            self._check_name(name)
            specs[name] = spec
        self._caches = {
            name: MetricsCache(default_ttl=ttl, max_size=size, clock=clock, name=name)
            for name, (ttl, size) in specs.items()
        }

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in CACHE_SPECS:
            valid = ", ".join(CACHE_SPECS)
            msg = f"unknown cache name {name!r}; valid names are: {valid}"
            raise ValueError(msg)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._caches)

    def get(self, name: str) -> MetricsCache:
        """Return the cache called ``name``; ValueError lists the valid names."""
        self._check_name(name)
        return self._caches[name]

    def invalidate(self, name: str | None = None) -> int:
        """Clear one cache, or all when ``name`` is None; returns entries removed."""
        if name is None:
            return sum(cache.clear() for cache in self._caches.values())
        return self.get(name).clear()

    def stats(self) -> dict[str, Any]:
        """Per-cache statistics plus a summary; the caller adds the timestamp."""
        caches = {name: cache.get_stats() for name, cache in self._caches.items()}
        hits = sum(s["hits"] for s in caches.values())
        misses = sum(s["misses"] for s in caches.values())
        total = hits + misses
        return {
            "caches": caches,
            "summary": {
                "total_hits": hits,
                "total_misses": misses,
                "total_requests": total,
                "overall_hit_rate_percent": percent(hits, total),
            },
        }


_default_set: CacheSet | None = None
_default_lock = threading.Lock()


def default_cache_set() -> CacheSet:
    """The process-wide CacheSet, created on first use rather than at import."""
    global _default_set
    if _default_set is None:
        with _default_lock:
            if _default_set is None:
                _default_set = CacheSet()
    return _default_set


def get_task_status_cache() -> MetricsCache:
    return default_cache_set().get("task_status")


def get_worker_status_cache() -> MetricsCache:
    return default_cache_set().get("worker_status")


def get_queue_status_cache() -> MetricsCache:
    return default_cache_set().get("queue_status")


def get_metrics_summary_cache() -> MetricsCache:
    return default_cache_set().get("metrics_summary")


def get_health_check_cache() -> MetricsCache:
    return default_cache_set().get("health_check")


def invalidate_all_metrics_caches() -> int:
    """Clear every process-wide cache; returns the number of entries removed."""
    return default_cache_set().invalidate()
