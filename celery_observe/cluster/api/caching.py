"""The caching seed in front of the API: per-endpoint TTLs, X-Cache headers, ETags.

Each answer is cached as its rendered body, so a hit costs a dictionary lookup and no
JSON encoding; concurrent misses of one key share one computation (one broadcast).
``If-None-Match`` with the current ETag gets ``304 Not Modified``. With a shared cache
(``ApiSettings(shared_cache_url=...)``, see :mod:`.shared_cache`) the replicas of an API answer
from Redis first and from these caches while Redis fails.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from starlette.requests import Request
from starlette.responses import Response

from ...cache import MetricsCache
from ...named_caches import CacheSet

if TYPE_CHECKING:
    from .settings import ApiSettings
    from .shared_cache import SharedCache


class Rendered(NamedTuple):
    status_code: int
    body: bytes
    etag: str


def encode(data: Any) -> bytes:
    """JSON with sorted keys (stable ETags); values JSON cannot hold are shown as text."""
    return json.dumps(data, sort_keys=True, default=str, separators=(",", ":")).encode()


def render(status_code: int, data: Any) -> Rendered:
    """The body and its ETag, for an answer that is cached."""
    body = encode(data)
    return Rendered(status_code, body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def json_response(status_code: int, data: Any, headers: dict[str, str] | None = None) -> Response:
    """An uncached answer: no ETag, so nothing to hash."""
    return Response(encode(data), status_code=status_code, media_type="application/json",
                    headers=headers)


class ApiCaches(CacheSet):
    """The seed's five caches in memory; with a shared layer, invalidating empties it too and
    the statistics add its figures under ``shared``."""

    def __init__(self, shared: SharedCache | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock=clock)
        self.shared = shared

    def invalidate(self, name: str | None = None) -> int:
        removed = super().invalidate(name)
        return removed + (self.shared.invalidate(name) if self.shared is not None else 0)

    def stats(self) -> dict[str, Any]:
        figures = super().stats()
        if self.shared is not None:
            figures["shared"] = self.shared.stats()
        return figures


class ResponseCache:
    """The seed's five caches holding rendered answers, behind a shared layer if one is set."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 shared: SharedCache | None = None) -> None:
        self.caches = ApiCaches(shared, clock=clock)
        self.shared = shared

    @classmethod
    def for_settings(cls, settings: ApiSettings) -> ResponseCache:
        """In memory only, or behind the Redis of ``settings.shared_cache_url``.

        A replica waits for another's answer as long as computing one may take: an answer
        asks the workers at most twice (``/status`` asks for status and tasks), each within
        ``timeout``, or ``discovery_timeout`` while no worker is known yet.
        """
        if settings.shared_cache_url is None:
            return cls()
        from .shared_cache import SharedCache

        wait = 2 * max(settings.timeout, settings.discovery_timeout)
        return cls(shared=SharedCache(settings.shared_cache_url, wait=wait))

    def _cached(self, cache: MetricsCache, key: str,
                compute: Callable[[], Rendered]) -> tuple[Rendered, float | None]:
        """The answer and its age in seconds; None for an answer computed by this call."""
        if self.shared is not None:
            shared = self.shared.get_or_compute(cache.name, key, compute, cache.default_ttl)
            if shared is not None:
                if shared.age is None:  # kept in memory too, for when Redis fails
                    cache.set(key, shared.rendered)
                return shared
        rendered, hit = cache.get_or_compute(key, compute)
        return rendered, ((cache.age(key) or 0.0) if hit else None)

    def respond(self, request: Request, cache_name: str, key: str,
                compute: Callable[[], tuple[int, Any]], use_cache: bool) -> Response:
        """The answer for ``key``, from ``cache_name`` unless ``use_cache`` is False."""
        cache = self.caches.get(cache_name)
        if use_cache:
            rendered, age = self._cached(cache, key, lambda: render(*compute()))
        else:
            rendered, age = render(*compute()), None
        headers = {"X-Cache": "MISS" if age is None else "HIT", "ETag": rendered.etag,
                   "Cache-Control": "no-cache"}
        if age is not None:
            headers["X-Cache-Age"] = f"{age:.3f}"
        if request.headers.get("if-none-match") == rendered.etag:
            return Response(status_code=304, headers=headers)
        return Response(rendered.body, status_code=rendered.status_code,
                        media_type="application/json", headers=headers)
