"""The TTL+LRU cache and its statistics, the seed's named caches, and their collector."""

from __future__ import annotations

import threading
from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

from celery_observe.cache import MetricsCache
from celery_observe.cache_metrics import CacheCollector
from celery_observe.named_caches import (
    CACHE_SPECS,
    CacheSet,
    default_cache_set,
    get_health_check_cache,
    get_metrics_summary_cache,
    get_queue_status_cache,
    get_task_status_cache,
    get_worker_status_cache,
    invalidate_all_metrics_caches,
)

WAIT = 2.0  # upper bound for any Event wait, so a bug fails instead of hanging

SEED_STATS_FIELDS = {
    "size",
    "max_size",
    "utilization_percent",
    "hits",
    "misses",
    "hit_rate_percent",
    "sets",
    "evictions",
    "expirations",
    "invalidations",
    "total_requests",
}


class FakeClock:
    """A clock that only moves when told to; counts reads so tests can sync on them."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.calls = 0
        self.on_call: Any = None

    def __call__(self) -> float:
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> MetricsCache:
    return MetricsCache(default_ttl=5.0, max_size=3, cleanup_interval=60.0, clock=clock)


def stat(cache: MetricsCache, field: str) -> Any:
    return cache.get_stats()[field]


# -- basic get/set and counting ------------------------------------------------


def test_get_missing_key_returns_default_and_counts_miss(cache: MetricsCache) -> None:
    """A get on an absent key returns the default and counts one miss."""
    assert cache.get("k", "dflt") == "dflt"
    assert (stat(cache, "hits"), stat(cache, "misses")) == (0, 1)


def test_set_then_get_counts_set_and_hit(cache: MetricsCache) -> None:
    """A stored value is returned by get, counting one set and one hit."""
    cache.set("k", {"a": 1})
    assert cache.get("k") == {"a": 1}
    assert (stat(cache, "sets"), stat(cache, "hits"), stat(cache, "misses")) == (
        1,
        1,
        0,
    )


def test_expired_entry_counts_miss_and_expiration(
    cache: MetricsCache, clock: FakeClock
) -> None:
    """Reading an entry at its expiry time is a miss and an expiration, removing it."""
    cache.set("k", 1)
    clock.now += 5.0
    assert cache.get("k") is None
    stats = cache.get_stats()
    assert (stats["misses"], stats["expirations"], stats["size"]) == (1, 1, 0)


def test_entry_is_fresh_just_before_ttl(cache: MetricsCache, clock: FakeClock) -> None:
    """An entry is still served just before its TTL elapses."""
    cache.set("k", 1)
    clock.now += 4.999
    assert cache.get("k") == 1


def test_per_entry_ttl_overrides_default(cache: MetricsCache, clock: FakeClock) -> None:
    """A ttl given to set replaces the cache's default for that entry only."""
    cache.set("short", 1, ttl=1.0)
    cache.set("long", 2, ttl=30.0)
    clock.now += 10.0
    assert (cache.get("short"), cache.get("long")) == (None, 2)


def test_caching_none_is_a_hit(cache: MetricsCache) -> None:
    """None can be cached and is told apart from a miss."""
    cache.set("k", None)
    assert cache.get("k", "dflt") is None
    assert (stat(cache, "hits"), stat(cache, "misses")) == (1, 0)


def test_set_replaces_existing_value_without_eviction(cache: MetricsCache) -> None:
    """Setting an existing key replaces its value and evicts nothing."""
    for key in ("a", "b", "c"):
        cache.set(key, 0)
    cache.set("a", 9)
    assert (cache.get("a"), stat(cache, "size"), stat(cache, "evictions")) == (9, 3, 0)


# -- LRU -----------------------------------------------------------------------


def test_lru_evicts_least_recently_used_and_get_refreshes(cache: MetricsCache) -> None:
    """When full, the least recently used entry goes; a get makes an entry recent."""
    for key in ("a", "b", "c"):
        cache.set(key, key)
    cache.get("a")
    cache.set("d", "d")
    assert [cache.get(k) for k in ("a", "b", "c", "d")] == ["a", None, "c", "d"]


def test_evictions_are_counted(cache: MetricsCache) -> None:
    """Each entry dropped for room counts one eviction."""
    for i in range(5):
        cache.set(f"k{i}", i)
    assert (stat(cache, "evictions"), stat(cache, "size")) == (2, 3)


# -- invalidation --------------------------------------------------------------


def test_invalidate_removes_key_and_counts(cache: MetricsCache) -> None:
    """invalidate returns True and counts one invalidation for a present key only."""
    cache.set("k", 1)
    assert (cache.invalidate("k"), cache.invalidate("k")) == (True, False)
    assert (stat(cache, "invalidations"), cache.get("k")) == (1, None)


def test_invalidate_pattern_removes_matching_keys(cache: MetricsCache) -> None:
    """invalidate_pattern removes glob matches and returns how many it removed."""
    cache.set("task_1", 1)
    cache.set("task_2", 2)
    cache.set("worker_1", 3)
    assert cache.invalidate_pattern("task_*") == 2
    assert (stat(cache, "invalidations"), stat(cache, "size")) == (2, 1)
    assert cache.get("worker_1") == 3


def test_clear_removes_all_and_counts_each(cache: MetricsCache) -> None:
    """clear returns the number of entries and counts each as an invalidation."""
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.clear() == 2
    assert (stat(cache, "invalidations"), stat(cache, "size")) == (2, 0)


# -- statistics ----------------------------------------------------------------


def test_stats_fields_are_exactly_the_seeds(cache: MetricsCache) -> None:
    """get_stats returns exactly the fields of the seed's stats response."""
    assert set(cache.get_stats()) == SEED_STATS_FIELDS


def test_stats_percentages_are_rounded(cache: MetricsCache) -> None:
    """Utilisation and hit rate are percentages rounded to two decimals."""
    cache.set("a", 1)
    cache.get("a")
    cache.get("a")
    cache.get("zz")
    stats = cache.get_stats()
    assert stats["utilization_percent"] == 33.33
    assert stats["hit_rate_percent"] == 66.67
    assert stats["total_requests"] == 3


def test_hit_rate_is_zero_without_requests(cache: MetricsCache) -> None:
    """With no requests the hit rate is 0.0 rather than a division error."""
    assert cache.get_stats()["hit_rate_percent"] == 0.0


def test_cleanup_runs_only_after_interval(
    cache: MetricsCache, clock: FakeClock
) -> None:
    """Expired entries stay until cleanup_interval has passed, then are expirations."""
    cache.set("a", 1, ttl=1.0)
    cache.set("b", 2, ttl=1.0)
    clock.now += 59.0
    cache.set("c", 3)
    assert (stat(cache, "size"), stat(cache, "expirations")) == (3, 0)
    clock.now += 1.0
    cache.set("d", 4)
    assert (stat(cache, "size"), stat(cache, "expirations")) == (2, 2)


def test_age_reports_seconds_since_set(cache: MetricsCache, clock: FakeClock) -> None:
    """age gives seconds since the entry was stored, and None when absent or expired."""
    cache.set("k", 1)
    clock.now += 1.5
    assert (cache.age("k"), cache.age("nope")) == (1.5, None)
    clock.now += 10.0
    assert cache.age("k") is None


# -- validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"default_ttl": 0},
            "default_ttl must be a number of seconds greater than 0, got 0",
        ),
        (
            {"default_ttl": "5"},
            "default_ttl must be a number of seconds greater than 0, got '5'",
        ),
        ({"max_size": 0}, "max_size must be an integer of at least 1, got 0"),
        ({"max_size": 2.5}, "max_size must be an integer of at least 1, got 2.5"),
        ({"max_size": True}, "max_size must be an integer of at least 1, got True"),
        (
            {"cleanup_interval": -1.0},
            "cleanup_interval must be a number of seconds greater than 0, got -1.0",
        ),
    ],
)
def test_constructor_rejects_bad_arguments(
    kwargs: dict[str, Any], message: str
) -> None:
    """A bad constructor argument raises ValueError naming it, its value, the rule."""
    with pytest.raises(ValueError) as info:
        MetricsCache(**kwargs)
    assert str(info.value) == message


def test_set_rejects_non_positive_ttl(cache: MetricsCache) -> None:
    """set refuses a ttl that is not greater than 0."""
    with pytest.raises(
        ValueError, match=r"^ttl must be a number of seconds greater than 0"
    ):
        cache.set("k", 1, ttl=0)


# -- get_or_compute ------------------------------------------------------------


def test_get_or_compute_misses_then_hits(cache: MetricsCache) -> None:
    """get_or_compute computes on a miss and serves the stored value afterwards."""
    assert cache.get_or_compute("k", lambda: 7) == (7, False)
    assert cache.get_or_compute("k", lambda: 8) == (7, True)
    assert (stat(cache, "hits"), stat(cache, "misses"), stat(cache, "sets")) == (
        1,
        1,
        1,
    )


def run_threads(n: int, target: Any) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    return threads


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()


def overlapping_cache(
    clock: FakeClock, callers: int
) -> tuple[MetricsCache, threading.Event]:
    """A cache and an Event set after `callers` lookups (each reads the clock once)."""
    cache = MetricsCache(clock=clock)
    looked_up = threading.Event()
    base = clock.calls
    clock.on_call = lambda calls: looked_up.set() if calls - base >= callers else None
    return cache, looked_up


def test_concurrent_misses_compute_once(clock: FakeClock) -> None:
    """Eight concurrent callers for one key run compute once; the seven waiters hit."""
    cache, looked_up = overlapping_cache(clock, 8)
    runs: list[int] = []
    results: list[tuple[str, bool]] = []

    def compute() -> str:
        runs.append(1)
        assert looked_up.wait(WAIT)
        return "v"

    join_all(run_threads(8, lambda: results.append(cache.get_or_compute("k", compute))))
    assert len(runs) == 1
    assert sorted(results) == [("v", False)] + [("v", True)] * 7
    assert (stat(cache, "hits"), stat(cache, "misses"), stat(cache, "sets")) == (
        7,
        1,
        1,
    )


def test_compute_error_reaches_every_waiter_and_caches_nothing(
    clock: FakeClock,
) -> None:
    """If compute raises, all eight callers get the error and nothing is stored."""
    cache, looked_up = overlapping_cache(clock, 8)
    errors: list[BaseException] = []

    def compute() -> str:
        assert looked_up.wait(WAIT)
        raise RuntimeError("inspect failed")

    def call() -> None:
        try:
            cache.get_or_compute("k", compute)
        except RuntimeError as exc:
            errors.append(exc)

    join_all(run_threads(8, call))
    assert [str(e) for e in errors] == ["inspect failed"] * 8
    assert (stat(cache, "size"), stat(cache, "sets"), stat(cache, "misses")) == (
        0,
        0,
        8,
    )


def test_different_keys_compute_in_parallel(cache: MetricsCache) -> None:
    """A slow computation for one key does not block computing another key."""
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        assert release.wait(WAIT)
        return "slow"

    slow_thread = run_threads(1, lambda: cache.get_or_compute("slow", slow))
    assert started.wait(WAIT)
    fast: list[tuple[str, bool]] = []
    join_all(
        run_threads(1, lambda: fast.append(cache.get_or_compute("fast", lambda: "f")))
    )
    release.set()
    join_all(slow_thread)
    assert fast == [("f", False)]


def test_invalidate_during_compute_skips_storing(cache: MetricsCache) -> None:
    """A value computed before an invalidation of its key is returned but not cached."""
    started, release = threading.Event(), threading.Event()
    results: list[tuple[str, bool]] = []

    def compute() -> str:
        started.set()
        assert release.wait(WAIT)
        return "stale"

    thread = run_threads(1, lambda: results.append(cache.get_or_compute("k", compute)))
    assert started.wait(WAIT)
    assert cache.invalidate("k") is False
    release.set()
    join_all(thread)
    assert (results, cache.get("k"), stat(cache, "sets")) == (
        [("stale", False)],
        None,
        0,
    )


# -- decorator -----------------------------------------------------------------


def test_cached_decorator_computes_once_per_arguments(cache: MetricsCache) -> None:
    """The decorated function runs once per distinct argument set while fresh."""
    calls: list[tuple[int, int]] = []

    @cache.cached(ttl=5.0, key_prefix="metrics:")
    def summary(a: int, b: int = 0) -> int:
        calls.append((a, b))
        return a + b

    assert [summary(1, b=2), summary(1, b=2), summary(2)] == [3, 3, 2]
    assert calls == [(1, 2), (2, 0)]


def test_cached_key_is_prefix_qualname_and_arguments(cache: MetricsCache) -> None:
    """The key is key_prefix + qualified name + repr of args and of sorted kwargs."""

    @cache.cached(key_prefix="p:")
    def f(*args: int, **kwargs: int) -> str:
        return "x"

    f(1, c=3, b=2)
    assert cache.get(f"p:{f.__qualname__}(1,)[('b', 2), ('c', 3)]") == "x"


def test_cached_keeps_function_metadata(cache: MetricsCache) -> None:
    """The wrapper keeps the wrapped function's name, docstring and __wrapped__."""

    def compute_metrics() -> int:
        """Build the summary."""
        return 1

    wrapped = cache.cached()(compute_metrics)
    assert (wrapped.__name__, wrapped.__doc__) == (
        "compute_metrics",
        "Build the summary.",
    )
    assert wrapped.__wrapped__ is compute_metrics  # type: ignore[attr-defined]


# -- CacheSet ------------------------------------------------------------------


def test_cache_specs_match_seed_table() -> None:
    """CACHE_SPECS holds the seed's five caches with their TTLs and sizes."""
    assert dict(CACHE_SPECS) == {
        "task_status": (2.0, 500),
        "worker_status": (5.0, 100),
        "queue_status": (3.0, 100),
        "metrics_summary": (5.0, 100),
        "health_check": (10.0, 50),
    }


def test_cache_set_builds_caches_from_specs(clock: FakeClock) -> None:
    """A CacheSet holds one cache per seed name with that name's TTL and size."""
    caches = CacheSet(clock=clock)
    built = {
        n: (caches.get(n).default_ttl, caches.get(n).max_size) for n in caches.names
    }
    assert built == dict(CACHE_SPECS)


def test_cache_set_applies_overrides(clock: FakeClock) -> None:
    """An override replaces one cache's TTL and size and leaves the others alone."""
    caches = CacheSet(overrides={"health_check": (30.0, 5)}, clock=clock)
    health, task = caches.get("health_check"), caches.get("task_status")
    assert (health.default_ttl, health.max_size, task.max_size) == (30.0, 5, 500)


def test_cache_set_unknown_name_lists_valid_names(clock: FakeClock) -> None:
    """Asking for an unknown cache raises ValueError listing the valid names."""
    with pytest.raises(ValueError) as info:
        CacheSet(clock=clock).get("tasks")
    assert str(info.value) == (
        "unknown cache name 'tasks'; valid names are: "
        "task_status, worker_status, queue_status, metrics_summary, health_check"
    )


def test_cache_set_rejects_unknown_override(clock: FakeClock) -> None:
    """An override for a name that is not a seed cache is refused."""
    with pytest.raises(ValueError, match=r"^unknown cache name 'nope'"):
        CacheSet(overrides={"nope": (1.0, 1)}, clock=clock)


def test_cache_set_invalidate_all(clock: FakeClock) -> None:
    """invalidate() with no name clears every cache and returns the total removed."""
    caches = CacheSet(clock=clock)
    caches.get("task_status").set("a", 1)
    caches.get("task_status").set("b", 1)
    caches.get("health_check").set("c", 1)
    assert caches.invalidate() == 3
    assert sum(s["size"] for s in caches.stats()["caches"].values()) == 0


def test_cache_set_invalidate_one(clock: FakeClock) -> None:
    """invalidate(name) clears only that cache."""
    caches = CacheSet(clock=clock)
    caches.get("task_status").set("a", 1)
    caches.get("health_check").set("c", 1)
    assert caches.invalidate("task_status") == 1
    assert caches.get("health_check").get("c") == 1


def test_cache_set_invalidate_unknown(clock: FakeClock) -> None:
    """invalidate with an unknown name raises ValueError."""
    with pytest.raises(ValueError, match=r"^unknown cache name 'workers'"):
        CacheSet(clock=clock).invalidate("workers")


def test_cache_set_stats_summary(clock: FakeClock) -> None:
    """stats() has per-cache stats and a summary totalling hits, misses and hit rate."""
    caches = CacheSet(clock=clock)
    task, worker = caches.get("task_status"), caches.get("worker_status")
    task.set("a", 1)
    task.get("a")
    task.get("a")
    worker.get("x")
    worker.set("x", 1)
    worker.get("x")
    worker.get("y")
    stats = caches.stats()
    assert set(stats) == {"caches", "summary"}
    assert list(stats["caches"]) == list(CACHE_SPECS)
    assert stats["summary"] == {
        "total_hits": 3,
        "total_misses": 2,
        "total_requests": 5,
        "overall_hit_rate_percent": 60.0,
    }


def test_cache_set_stats_summary_without_requests(clock: FakeClock) -> None:
    """With no requests the overall hit rate is 0.0."""
    assert CacheSet(clock=clock).stats()["summary"]["overall_hit_rate_percent"] == 0.0


# -- process-wide defaults -----------------------------------------------------


def test_default_accessors_return_same_objects() -> None:
    """Each default accessor returns the same cache every call, from one shared set."""
    accessors = {
        "task_status": get_task_status_cache,
        "worker_status": get_worker_status_cache,
        "queue_status": get_queue_status_cache,
        "metrics_summary": get_metrics_summary_cache,
        "health_check": get_health_check_cache,
    }
    for name, accessor in accessors.items():
        assert accessor() is accessor() is default_cache_set().get(name)


def test_invalidate_all_metrics_caches_clears_defaults() -> None:
    """invalidate_all_metrics_caches empties every process-wide cache."""
    invalidate_all_metrics_caches()
    get_task_status_cache().set("a", 1)
    get_health_check_cache().set("b", 1)
    assert invalidate_all_metrics_caches() == 2
    assert get_task_status_cache().get("a") is None


# -- Prometheus collector ------------------------------------------------------


def test_collector_exposes_cache_figures(clock: FakeClock) -> None:
    """The collector reports hits, misses, evictions, expirations, size and max size."""
    caches = CacheSet(overrides={"health_check": (1.0, 1)}, clock=clock)
    task, health = caches.get("task_status"), caches.get("health_check")
    task.set("a", 1)
    task.get("a")
    task.get("b")
    health.set("x", 1)
    health.set("y", 1)
    clock.now += 1.0
    health.get("y")
    registry = CollectorRegistry()
    registry.register(CacheCollector(caches))

    def value(name: str, cache: str) -> float | None:
        return registry.get_sample_value(
            f"celery_observe_cache_{name}", {"cache": cache}
        )

    assert [value(f"{n}_total", "task_status") for n in ("hits", "misses")] == [
        1.0,
        1.0,
    ]
    assert [
        value(f"{n}_total", "health_check") for n in ("evictions", "expirations")
    ] == [
        1.0,
        1.0,
    ]
    assert (value("size", "task_status"), value("max_size", "task_status")) == (
        1.0,
        500.0,
    )
    assert value("max_size", "health_check") == 1.0


def test_collector_is_not_registered_at_import() -> None:
    """Importing the module registers nothing on prometheus_client's global registry."""
    assert (
        prometheus_client.REGISTRY.get_sample_value(
            "celery_observe_cache_max_size", {"cache": "task_status"}
        )
        is None
    )
