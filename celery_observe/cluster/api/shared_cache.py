"""The API's opt-in cache in Redis, shared by its replicas: one broadcast per TTL, not one each.

An answer is stored under ``celery-observe:api:<cache>:answer:<key>`` as one string (format,
status code, ETag, the time it was stored, the body) and expires with the cache's TTL. A
replica that finds none takes a lock (``SET NX PX``, in one script with the lookup) and
computes; the others poll for its answer up to ``wait`` seconds, then compute their own, so a
slow or crashed replica costs a bounded wait, never a hang. The lock holder stores only while
it still holds the lock: an invalidation deletes the lock, so an answer computed before it is
not stored after it.

Redis is read on every request, so an invalidation on one replica is seen by all at once.
While Redis fails, a replica answers from its in-memory caches: the fault is logged once and
counted, and Redis is asked again after :data:`RETRY_SECONDS`.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

from ...config import positive_seconds
from ...faults import FaultLog
from ...named_caches import CACHE_SPECS
from ...redaction import Masker, mask_url
from .caching import Rendered

PREFIX: Final = "celery-observe:api"
INSTALL_HINT: Final = "pip install 'celery-observe[redis]'"
SCHEMES: Final = ("redis", "rediss", "unix")
#: The fault component, as logged and as counted in ``celery_observe_internal_errors_total``.
COMPONENT: Final = "api_shared_cache"
#: Seconds a replica answers from memory alone after Redis failed, before asking it again.
RETRY_SECONDS: Final = 5.0
#: Seconds between two looks for the answer another replica is computing.
POLL_SECONDS: Final = 0.01
#: Seconds one Redis command may take; a Redis slower than that counts as failing.
SOCKET_TIMEOUT: Final = 0.5
#: Keys one invalidation deletes per cache at most; any left expire within their TTL.
MAX_INVALIDATED: Final = 100_000
#: Keys asked for per SCAN step and deleted per DEL.
BATCH: Final = 500
#: The stored form: ``1 <status> <etag> <stored at>\n<body>``; another format is a miss.
FORMAT: Final = b"1"

# One round trip per look: the answer if there is one, else the lock if it is free.
_LOOKUP: Final = """
local answer = redis.call('GET', KEYS[1])
if answer then return {1, answer} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}
"""
# Store the answer and free the lock, only while the lock is still ours.
_STORE: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
return 1
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class Step(Enum):
    """What a replica does after one look in Redis."""

    USE = "use"          # an answer is stored: serve it
    COMPUTE = "compute"  # the lock is ours: compute, store, free it
    WAIT = "wait"        # another replica holds the lock: look again shortly
    GIVE_UP = "give up"  # waited long enough: compute without the lock


def next_step(found: bool, locked: bool, waited: float, wait: float) -> Step:
    """The lock/wait rule for one look that found an answer, took the lock, or neither."""
    if found:
        return Step.USE
    if locked:
        return Step.COMPUTE
    return Step.GIVE_UP if waited >= wait else Step.WAIT


class Shared(NamedTuple):
    """An answer from the shared layer; ``age`` is None when this replica computed it."""

    rendered: Rendered
    age: float | None


def check_url(url: str) -> str:
    """``url`` if the shared cache can use it; else ValueError (scheme) or ImportError (redis)."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(f"ApiSettings(shared_cache_url=...): expected a redis://, rediss:// or "
                         f"unix:// URL, got {mask_url(url)!r}")
    try:
        import redis  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the shared cache ({mask_url(url)}) needs the redis client, which is "
                          f"not installed: {INSTALL_HINT}", name="redis") from exc
    return url


def encode(rendered: Rendered, stored_at: float) -> bytes:
    head = b"%s %d %s %.6f\n" % (FORMAT, rendered.status_code, rendered.etag.encode(), stored_at)
    return head + rendered.body


def decode(raw: bytes) -> tuple[Rendered, float] | None:
    """The answer and the time it was stored, or None for a form this version does not write."""
    head, newline, body = raw.partition(b"\n")
    parts = head.split(b" ")
    if not newline or len(parts) != 4 or parts[0] != FORMAT:
        return None
    try:
        return Rendered(int(parts[1]), body, parts[2].decode()), float(parts[3])
    except ValueError:
        return None


class _Figures:
    """Per-cache counts of one replica, for ``/cache/stats`` and ``/metrics``."""

    __slots__ = ("hits", "misses", "wait_timeouts", "waits")

    def __init__(self) -> None:
        self.hits = self.misses = self.waits = self.wait_timeouts = 0


class SharedCache:
    """Rendered answers in Redis, shared by every replica of one API (one database each)."""

    def __init__(self, url: str, wait: float, *, wall: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = mask_url(check_url(url))
        self.wait = positive_seconds("SharedCache(wait=...)", wait)
        self._lock_ms = max(1, int(wait * 1000))  # a lock outlives no wait for it
        self._wall = wall
        self._clock = clock
        # No retries: a Redis that fails costs one timeout, then RETRY_SECONDS of memory only.
        self._redis = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT,
                                           socket_connect_timeout=SOCKET_TIMEOUT,
                                           retry=Retry(NoBackoff(), 0))
        self._lookup = self._redis.register_script(_LOOKUP)
        self._store = self._redis.register_script(_STORE)
        self._release = self._redis.register_script(_RELEASE)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._faults = FaultLog(mask=Masker([urlsplit(url).password or ""]))
        self._lock = threading.Lock()
        self._figures = {name: _Figures() for name in CACHE_SPECS}
        self._fault_count = 0
        self._down_until = float("-inf")

    @property
    def available(self) -> bool:
        """False for RETRY_SECONDS after a fault: the replica answers from memory meanwhile."""
        return self._clock() >= self._down_until

    def _fault(self, exc: BaseException) -> None:
        with self._lock:
            self._fault_count += 1
            self._down_until = self._clock() + RETRY_SECONDS
        self._faults.report(COMPONENT, exc)

    def _count(self, cache_name: str, field: str) -> None:
        with self._lock:
            figures = self._figures[cache_name]
            setattr(figures, field, getattr(figures, field) + 1)

    @staticmethod
    def _keys(cache_name: str, key: str) -> tuple[str, str]:
        return f"{PREFIX}:{cache_name}:answer:{key}", f"{PREFIX}:{cache_name}:lock:{key}"

    def _look(self, answer_key: str, lock_key: str,
              token: str) -> tuple[tuple[Rendered, float] | None, bool]:
        """One look: the stored answer and when it was stored, or whether the lock is ours now."""
        while True:
            reply = self._lookup(keys=[answer_key, lock_key], args=[token, self._lock_ms])
            if reply[0] != 1:
                return None, reply[0] == 2
            found = decode(reply[1])
            if found is not None:
                return found, False
            self._redis.delete(answer_key)  # not a form this version reads: gone, look again

    def get_or_compute(self, cache_name: str, key: str, compute: Callable[[], Rendered],
                       ttl: float) -> Shared | None:
        """The stored answer, or the one this replica computed and stored; None when Redis
        failed before anything was computed (the caller answers from its own cache)."""
        if not self.available:
            return None
        answer_key, lock_key = self._keys(cache_name, key)
        token = secrets.token_hex(8)
        started, waited = self._clock(), False
        try:
            found, locked = self._look(answer_key, lock_key, token)
            while next_step(found is not None, locked, self._clock() - started,
                            self.wait) is Step.WAIT:
                if not waited:
                    waited = True
                    self._count(cache_name, "waits")
                time.sleep(POLL_SECONDS)
                found, locked = self._look(answer_key, lock_key, token)
        except self._errors as exc:
            self._fault(exc)
            return None
        if found is not None:
            self._count(cache_name, "hits")
            rendered, stored_at = found
            return Shared(rendered, min(max(0.0, self._wall() - stored_at), ttl))
        self._count(cache_name, "misses")
        if waited:  # the lock expired, or the wait ran out: no answer came
            self._count(cache_name, "wait_timeouts")
        return Shared(self._compute(answer_key, lock_key, token, compute, ttl, locked), None)

    def _compute(self, answer_key: str, lock_key: str, token: str,
                 compute: Callable[[], Rendered], ttl: float, locked: bool) -> Rendered:
        try:
            rendered = compute()
        except BaseException:
            if locked:
                try:
                    self._release(keys=[lock_key], args=[token])
                except self._errors as exc:
                    self._fault(exc)
            raise
        stored = encode(rendered, self._wall())
        milliseconds = max(1, int(ttl * 1000))
        try:
            if locked:
                self._store(keys=[answer_key, lock_key], args=[token, stored, milliseconds])
            else:
                self._redis.set(answer_key, stored, px=milliseconds)
        except self._errors as exc:
            self._fault(exc)
        return rendered

    def invalidate(self, cache_name: str | None = None) -> int:
        """Delete the answers (and locks) of one cache, or all; returns the answers deleted."""
        names = list(CACHE_SPECS) if cache_name is None else [cache_name]
        deleted = 0
        try:
            for name in names:
                found = itertools.islice(
                    self._redis.scan_iter(match=f"{PREFIX}:{name}:*", count=BATCH),
                    MAX_INVALIDATED)
                while batch := list(itertools.islice(found, BATCH)):
                    deleted += self._delete(name, batch)
        except self._errors as exc:
            self._fault(exc)
        return deleted

    def _delete(self, cache_name: str, keys: list[bytes]) -> int:
        if keys:
            self._redis.delete(*keys)
        answers = f"{PREFIX}:{cache_name}:answer:".encode()
        return sum(found.startswith(answers) for found in keys)

    def stats(self) -> dict[str, Any]:
        """This replica's figures of the shared layer (no round trip to Redis)."""
        with self._lock:
            caches = {name: {field: getattr(figures, field) for field in _Figures.__slots__}
                      for name, figures in self._figures.items()}
            faults = self._fault_count
        return {"url": self.url, "available": self.available, "faults": faults,
                "caches": caches}

    def close(self) -> None:
        self._redis.close()


__all__ = ["SharedCache", "Step", "check_url", "next_step"]
