"""``celery_queue_length`` and friends: the worker's scrape-time view of its queues' depths.

The broker round trip, its cache and its bounds are :class:`~.queues.QueueReader`'s; this
collector only turns a reading into Prometheus families.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..queues import QueueDepth, QueueReader


class QueueLengthCollector(Collector):
    """The depths of the queues named by ``queue_names()``, read when Prometheus scrapes."""

    def __init__(self, reader: QueueReader, queue_names: Callable[[], Iterable[str]]) -> None:
        self._reader = reader
        self._queue_names = queue_names

    def collect(self) -> Iterable[Metric]:
        yield from self._families(self._reader.measure(self._queue_names()))

    def describe(self) -> Iterable[Metric]:
        """Names only, so registering the collector does not ask the broker."""
        yield from self._families({})

    def _families(self, depths: dict[str, QueueDepth]) -> Iterable[Metric]:
        length = GaugeMetricFamily(
            "celery_queue_length",
            "Messages waiting in each queue this worker consumes (Redis: all priorities).",
            labels=["queue_name"])
        by_priority = GaugeMetricFamily(
            "celery_queue_length_by_priority",
            "Messages waiting per Redis priority sub-queue, by kombu priority step.",
            labels=["queue_name", "priority"])
        oldest = GaugeMetricFamily(
            "celery_queue_oldest_message_age_seconds",
            "Age of the oldest waiting message, where the broker shows it without consuming "
            "it and the producer stamped its publish time.",
            labels=["queue_name"])
        for name in sorted(depths):
            depth = depths[name]
            length.add_metric([name], depth.total)
            for priority, count in sorted(depth.by_priority.items()):
                by_priority.add_metric([name, str(priority)], count)
            if depth.oldest_age_seconds is not None:
                oldest.add_metric([name], depth.oldest_age_seconds)
        yield length
        yield by_priority
        yield oldest
        yield CounterMetricFamily(
            "celery_queue_length_errors",
            "Failed broker round trips for queue lengths; those scrapes have no queue gauges.",
            value=self._reader.errors)
