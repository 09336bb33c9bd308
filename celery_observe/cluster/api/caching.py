"""The caching seed in front of the API: per-endpoint TTLs, X-Cache headers, ETags.

Each answer is cached as its rendered body, so a hit costs a dictionary lookup and no
JSON encoding; concurrent misses of one key share one computation (one broadcast).
``If-None-Match`` with the current ETag gets ``304 Not Modified``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from starlette.requests import Request
from starlette.responses import Response

from ...named_caches import CacheSet


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


class ResponseCache:
    """The seed's five caches holding rendered answers."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.caches = CacheSet(clock=clock)

    def respond(self, request: Request, cache_name: str, key: str,
                compute: Callable[[], tuple[int, Any]], use_cache: bool) -> Response:
        """The answer for ``key``, from ``cache_name`` unless ``use_cache`` is False."""
        cache = self.caches.get(cache_name)
        hit, age = False, 0.0
        if use_cache:
            rendered, hit = cache.get_or_compute(key, lambda: render(*compute()))
            age = (cache.age(key) or 0.0) if hit else 0.0
        else:
            rendered = render(*compute())
        headers = {"X-Cache": "HIT" if hit else "MISS", "ETag": rendered.etag,
                   "Cache-Control": "no-cache"}
        if hit:
            headers["X-Cache-Age"] = f"{age:.3f}"
        if request.headers.get("if-none-match") == rendered.etag:
            return Response(status_code=304, headers=headers)
        return Response(rendered.body, status_code=rendered.status_code,
                        media_type="application/json", headers=headers)
