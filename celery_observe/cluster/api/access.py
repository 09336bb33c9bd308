"""Who may call what: bearer tokens compared in constant time, and a per-client rate limit.

Endpoints that change something are off until a token is configured (403 naming the
setting), never open. The rate limit applies to requests that can cause a broadcast
(``use_cache=false``, POST): cached answers cost the broker nothing, so they are not
limited.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi import HTTPException, Request

#: Clients remembered by the rate limiter; the least recent are forgotten beyond it.
MAX_CLIENTS = 10_000


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_token(request: Request, token: str | None, *, purpose: str) -> None:
    """Let the request through only with ``token``; 403 while none is configured."""
    if token is None:
        raise HTTPException(403, detail=(
            f"{purpose} is turned off: configure a token (ApiSettings(token=...), or "
            "`celery observe serve --token-file FILE`) and send it as "
            "'Authorization: Bearer <token>'"))
    given = bearer(request)
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, detail="a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})


class RateLimiter:
    """A token bucket per client address: ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(per_minute)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, request: Request) -> None:
        """Count one request of this client; 429 with Retry-After beyond the limit."""
        client = request.client.host if request.client is not None else "unknown"
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
        if not allowed:
            wait = max(1, int((1.0 - tokens) / self._rate) + 1)
            raise HTTPException(429, detail="too many uncached or changing requests; "
                                "retry later or use the cached answers",
                                headers={"Retry-After": str(wait)})
