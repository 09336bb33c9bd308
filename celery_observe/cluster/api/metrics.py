"""The API's own ``/metrics``: the cluster as one target, for users who cannot scrape every
worker; and the API's requests, latencies and caches.

No copy of the per-worker task series: those stay on each worker's ``/metrics`` (see
``/prometheus/targets``). The cluster figures come from one cached ``Cluster.status()``
(the worker-status TTL), so however often Prometheus scrapes, the broker sees one broadcast
per TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ...cache_metrics import CacheCollector
from ...named_caches import CacheSet
from ...shapes import ClusterStatus
from ..client import BrokerUnreachableError
from .caching import ApiCaches
from .shared_cache import COMPONENT, SharedCache

#: Request latency buckets: a cache hit takes a millisecond, an uncached broadcast tens.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ClusterCollector(Collector):
    """Workers answering and missing, every known queue's depth and consumers."""

    def __init__(self, snapshot: Callable[[], ClusterStatus]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("celery_observe_api_broker_up",
                               "1 when the API reached the broker for its last snapshot.")
        try:
            status = self._snapshot()
        except BrokerUnreachableError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        workers = GaugeMetricFamily("celery_observe_api_workers",
                                    "Observed workers by whether they answered.",
                                    labels=["state"])
        workers.add_metric(["answering"], status["workers_online"])
        workers.add_metric(["missing"], len(status["missing"]))
        yield workers
        yield GaugeMetricFamily("celery_workers_count",
                                "Workers answering (the task-processing seed's name).",
                                value=status["workers_online"])
        length = GaugeMetricFamily("celery_queue_length",
                                   "Messages waiting in each known queue, consumed or not.",
                                   labels=["queue_name"])
        backlog = GaugeMetricFamily("celery_queues_backlog",
                                    "Messages waiting per queue (the task-processing seed's "
                                    "name).", labels=["queue"])
        consumers = GaugeMetricFamily("celery_queue_consumers",
                                      "Answering workers that consume each queue; 0 with "
                                      "messages waiting means they will not run.",
                                      labels=["queue_name"])
        for name, queue in sorted(status["queues"].items()):
            consumers.add_metric([name], len(queue["consumers"]))
            if queue["length"] is not None:
                length.add_metric([name], queue["length"])
                backlog.add_metric([name], queue["length"])
        yield length
        yield backlog
        yield consumers


class SharedCacheCollector(Collector):
    """This replica's use of the shared cache, per cache, and the faults Redis caused."""

    _FAMILIES: Final = (
        ("hits", "Answers read from the shared cache, some after waiting for another replica."),
        ("misses", "Answers this replica computed and stored in the shared cache."),
        ("waits", "Misses that waited for another replica computing the same answer."),
        ("wait_timeouts", "Waits that ended with this replica computing the answer itself."),
    )

    def __init__(self, shared: SharedCache) -> None:
        self._shared = shared

    def collect(self) -> Iterable[Metric]:
        stats = self._shared.stats()
        for field, doc in self._FAMILIES:
            family = CounterMetricFamily(f"celery_observe_api_shared_cache_{field}", doc,
                                         labels=["cache"])
            for name, figures in stats["caches"].items():
                family.add_metric([name], figures[field])
            yield family
        yield GaugeMetricFamily("celery_observe_api_shared_cache_up",
                                "0 while the shared cache failed lately and answers come from "
                                "memory alone.", value=int(stats["available"]))
        faults = CounterMetricFamily("celery_observe_internal_errors",
                                     "Faults swallowed, by component.", labels=["component"])
        faults.add_metric([COMPONENT], stats["faults"])
        yield faults


class ApiMetrics:
    """The registry behind the API's ``/metrics``."""

    def __init__(self, snapshot: Callable[[], ClusterStatus], caches: CacheSet) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ClusterCollector(snapshot))
        self.registry.register(CacheCollector(caches))
        if isinstance(caches, ApiCaches) and caches.shared is not None:
            self.registry.register(SharedCacheCollector(caches.shared))
        self.requests = Counter("celery_observe_api_requests", "Requests answered.",
                                ["path", "method", "status"], registry=self.registry)
        self.latency = Histogram("celery_observe_api_request_duration_seconds",
                                 "Time to answer a request.", ["path"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(path, method, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def response(self, request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(self.registry), media_type=content_type)

    def route_class(self) -> type[APIRoute]:
        """A route class that counts and times each request under its path template (a
        bounded label: never the raw path, which a client could vary without end)."""
        metrics = self

        class TimedRoute(APIRoute):
            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                handler = super().get_route_handler()
                template = self.path_format

                async def timed(request: Request) -> Response:
                    started = time.perf_counter()
                    status = 500
                    try:
                        response = await handler(request)
                        status = response.status_code
                        return response
                    except HTTPException as exc:
                        status = exc.status_code
                        raise
                    except RequestValidationError:
                        status = 422
                        raise
                    finally:
                        metrics.observe(template, request.method, status,
                                        time.perf_counter() - started)

                return timed

        return TimedRoute


__all__ = ["ApiMetrics", "ClusterCollector", "SharedCacheCollector"]
