"""A collector wrapper: a fault in one collector costs its own families, never the scrape."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..faults import FaultLog


class GuardedCollector(Collector):
    """A collector whose fault costs its own families only, never the whole scrape.

    prometheus_client renders a page by running every collector in turn, so one that
    raises would turn ``/metrics`` into a 500 for all the others.
    """

    def __init__(self, component: str, collector: Collector, faults: FaultLog) -> None:
        self._component = component
        self._collector = collector
        self._faults = faults

    def collect(self) -> Iterable[Metric]:
        try:
            yield from self._collector.collect()
        except Exception as exc:  # noqa: BLE001
            self._faults.report(self._component, exc)
