"""Thread-safe TTL + LRU cache with statistics, for snapshots costly to build.

Inspecting Celery is slow (a broadcast, a broker round trip) while its answers stay good
for seconds; caching keeps dashboards and probes from loading the cluster. Counting
rules, all under one lock so the figures add up (``total_requests = hits + misses``):

- hits: lookups served from a fresh entry, including ``get_or_compute`` callers that
  waited for another thread's computation of the same key and got its value;
- misses: lookups finding nothing or an expired entry, or waiting on a computation
  that raised; sets: values stored by ``set`` or a finished ``get_or_compute``;
- expirations: expired entries removed, by a lookup or by the periodic cleanup;
- evictions: entries dropped (least recently used first) because the cache was full;
- invalidations: entries removed by ``invalidate``, ``invalidate_pattern``, ``clear``.

An entry set at ``t`` with ttl ``d`` is fresh while ``clock() < t + d``. Expired entries
are purged lazily by a get/set once ``cleanup_interval`` has passed since the last
purge, so no background thread is needed.
"""

from __future__ import annotations

import fnmatch
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, NamedTuple, ParamSpec, TypeVar, cast

from .config import at_least, positive_seconds

T = TypeVar("T")
P = ParamSpec("P")

_MISSING: Final = object()  # distinguishes "no entry" from a cached None


class _Entry(NamedTuple):
    value: Any
    stored_at: float
    expires_at: float


class _Flight:
    """One in-progress computation that later callers for the same key wait on."""

    __slots__ = ("done", "error", "store", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.store = True  # cleared when the key is invalidated mid-computation


def percent(part: int, whole: int) -> float:
    """``part`` as a percentage of ``whole``, 2 decimals; 0 for an empty whole."""
    return round(part / whole * 100, 2) if whole else 0.0


class MetricsCache:
    """A bounded cache whose entries expire after a TTL; least recent use goes first."""

    def __init__(
        self,
        default_ttl: float = 5.0,
        max_size: int = 100,
        cleanup_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        self._default_ttl = positive_seconds("default_ttl", default_ttl)
        self._max_size = at_least("max_size", 1, max_size)
        self._cleanup_interval = positive_seconds("cleanup_interval", cleanup_interval)
        self._clock = clock
        self.name = name
        self._lock = threading.Lock()
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._flights: dict[str, _Flight] = {}
        self._last_cleanup = clock()
        self._hits = self._misses = self._sets = 0
        self._evictions = self._expirations = self._invalidations = 0

    @property
    def default_ttl(self) -> float:
        return self._default_ttl

    @property
    def max_size(self) -> int:
        return self._max_size

    # Private helpers from here to get(): the caller holds self._lock.
    def _maybe_cleanup(self, now: float) -> None:
        if now - self._last_cleanup < self._cleanup_interval:
            return
        self._last_cleanup = now
        expired = [k for k, e in self._data.items() if now >= e.expires_at]
        for key in expired:
            del self._data[key]
        self._expirations += len(expired)

    def _lookup(self, key: str, now: float) -> Any:
        """Return the fresh value (made most recent) or _MISSING; counts only expiry."""
        self._maybe_cleanup(now)
        entry = self._data.get(key)
        if entry is None:
            return _MISSING
        if now >= entry.expires_at:
            del self._data[key]
            self._expirations += 1
            return _MISSING
        self._data.move_to_end(key)
        return entry.value

    def _store(self, key: str, value: Any, ttl: float, now: float) -> None:
        if key in self._data:
            del self._data[key]
        while len(self._data) >= self._max_size:
            self._data.popitem(last=False)
            self._evictions += 1
        self._data[key] = _Entry(value, now, now + ttl)
        self._sets += 1

    def _remove(self, match: Callable[[str], bool]) -> int:
        """Invalidate matching entries; matching computations in flight won't store."""
        for key, flight in self._flights.items():
            if match(key):
                flight.store = False
        doomed = [key for key in self._data if match(key)]
        for key in doomed:
            del self._data[key]
        self._invalidations += len(doomed)
        return len(doomed)

    def _ttl(self, ttl: float | None) -> float:
        return self._default_ttl if ttl is None else positive_seconds("ttl", ttl)

    def get(self, key: str, default: Any = None) -> Any:
        """Return the cached value, or ``default`` when absent or expired."""
        with self._lock:
            value = self._lookup(key, self._clock())
            if value is _MISSING:
                self._misses += 1
                return default
            self._hits += 1
            return value

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds (the cache's default when None)."""
        seconds = self._ttl(ttl)
        with self._lock:
            now = self._clock()
            self._maybe_cleanup(now)
            self._store(key, value, seconds, now)

    def invalidate(self, key: str) -> bool:
        """Remove one entry; True if it was there. A running computation won't store."""
        with self._lock:
            return self._remove(lambda k: k == key) == 1

    def invalidate_pattern(self, pattern: str) -> int:
        """Remove entries whose key matches a case-sensitive glob such as ``task_*``."""
        with self._lock:
            return self._remove(lambda k: fnmatch.fnmatchcase(k, pattern))

    def clear(self) -> int:
        """Remove every entry and return how many there were."""
        with self._lock:
            return self._remove(lambda k: True)

    def age(self, key: str) -> float | None:
        """Seconds since a fresh entry was stored (for ``X-Cache-Age``); None if absent.

        Read-only: it neither counts a request nor refreshes recency.
        """
        with self._lock:
            now = self._clock()
            entry = self._data.get(key)
            if entry is None or now >= entry.expires_at:
                return None
            return now - entry.stored_at

    def get_or_compute(
        self, key: str, compute: Callable[[], T], ttl: float | None = None
    ) -> tuple[T, bool]:
        """Return ``(value, was_hit)``, running ``compute`` once per key at a time.

        Concurrent callers missing one key wait for the first caller's result instead of
        all querying Celery; if ``compute`` raises, each gets the exception and nothing
        is cached. The lock is not held while computing, so keys compute in parallel.
        """
        seconds = self._ttl(ttl)
        with self._lock:
            value = self._lookup(key, self._clock())
            if value is not _MISSING:
                self._hits += 1
                return cast(T, value), True
            flight = self._flights.get(key)
            owner = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
                self._misses += 1
        if not owner:
            flight.done.wait()
            with self._lock:
                if flight.error is not None:
                    self._misses += 1
                    raise flight.error
                self._hits += 1
                return cast(T, flight.value), True
        try:
            result = compute()
        except BaseException as exc:
            with self._lock:
                del self._flights[key]
                flight.error = exc
                flight.done.set()
            raise
        with self._lock:
            del self._flights[key]
            if flight.store:
                self._store(key, result, seconds, self._clock())
            flight.value = result
            flight.done.set()
        return result, False

    def cached(
        self, ttl: float | None = None, key_prefix: str = ""
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorate a function so its results are cached per argument set.

        The key is ``key_prefix + qualname + repr(args) + repr(sorted kwargs)``, so
        same-named functions sharing a cache need distinct prefixes. Call
        ``__wrapped__`` to bypass the cache (the seed's ``use_cache=false``).
        """
        self._ttl(ttl)  # fail at decoration time, not on the first call

        def decorate(func: Callable[P, T]) -> Callable[P, T]:
            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                arguments = f"{args!r}{sorted(kwargs.items())!r}"
                key = f"{key_prefix}{func.__qualname__}{arguments}"
                return self.get_or_compute(key, lambda: func(*args, **kwargs), ttl)[0]

            return wrapper

        return decorate

    def get_stats(self) -> dict[str, Any]:
        """Return the seed's statistics fields; percentages rounded to 2 decimals."""
        with self._lock:
            size = len(self._data)  # may include expired entries awaiting cleanup
            total = self._hits + self._misses
            return {
                "size": size,
                "max_size": self._max_size,
                "utilization_percent": percent(size, self._max_size),
                "hits": self._hits,
                "misses": self._misses,
                "hit_rate_percent": percent(self._hits, total),
                "sets": self._sets,
                "evictions": self._evictions,
                "expirations": self._expirations,
                "invalidations": self._invalidations,
                "total_requests": total,
            }
