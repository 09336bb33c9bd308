"""Prometheus families of a CacheSet's own figures, for the worker's and the API's /metrics."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from .named_caches import CacheSet


class CacheCollector:
    """Prometheus collector of a CacheSet's own figures; the caller registers it."""

    _FAMILIES: Final = (
        (CounterMetricFamily, "hits", "Lookups served from a fresh entry."),
        (CounterMetricFamily, "misses", "Lookups that found no fresh entry."),
        (CounterMetricFamily, "evictions", "Entries dropped as the cache was full."),
        (CounterMetricFamily, "expirations", "Entries removed as their TTL passed."),
        (GaugeMetricFamily, "size", "Entries stored, expired ones until cleanup."),
        (GaugeMetricFamily, "max_size", "Entries held before evicting."),
    )

    def __init__(self, cache_set: CacheSet) -> None:
        self._cache_set = cache_set

    def collect(self) -> Iterable[Metric]:
        caches = self._cache_set.stats()["caches"]
        for family_cls, field, doc in self._FAMILIES:
            family = family_cls(f"celery_observe_cache_{field}", doc, labels=["cache"])
            for name, stats in caches.items():
                family.add_metric([name], stats[field])
            yield family
