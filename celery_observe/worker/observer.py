"""Everything one observed worker owns: metrics, recorder, task hooks, probes and server.

The bootsteps only call into this object, so the whole runtime can be built and driven
in a test without a worker around it.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import celery
from celery import bootsteps, concurrency
from celery.worker import state as worker_state
from prometheus_client import CollectorRegistry, Metric

from ..cache_metrics import CacheCollector
from ..cardinality import BoundedLabel
from ..config import ObserveConfig
from ..faults import FaultLog
from ..named_caches import CacheSet
from ..queues import QueueReader
from ..redaction import REDACTED, Masker, TaskArgsLogFilter
from ..shapes import ActiveTask, ScheduledTask, TaskInfo, WorkerHealth, WorkerStatus, WorkerTasks
from .address import advertised_address
from .delivery import consumed_queues
from .exposition import Exposition
from .guarded_collector import GuardedCollector
from .history import TaskHistory
from .http_server import ObserveHTTPServer
from .instrument import TaskInstrumentation
from .metrics import TaskMetrics
from .pool import PoolCollector, active_and_reserved, pool_size, snapshot
from .probes import ProbeResult, liveness, readiness
from .queue_metrics import QueueLengthCollector
from .recorder import Recorder
from .resources import ResourceMonitor, pool_child_pids
from .routes import INLINE_PATHS, routes
from .task_metrics_receiver import TaskMetricsReceiver

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger("celery_observe")

_SOLO_POOLS = {"solo"}
#: How long stopping may wait for our threads, all of them together.
SHUTDOWN_SECONDS = 3.0


def _pool_name(worker: Any) -> str:
    """The pool's name as given to ``-P`` (prefork, threads, solo, ...)."""
    pool_cls = getattr(worker, "pool_cls", None)
    path = f"{getattr(pool_cls, '__module__', '')}:{getattr(pool_cls, '__name__', '')}"
    names: dict[str, str] = {target: alias for alias, target in concurrency.ALIASES.items()
                              if alias != "processes"}
    return names.get(path) or str(getattr(pool_cls, "__name__", pool_cls))


def shutdown_requested() -> bool:
    """Whether a warm or cold shutdown began: Celery stores its exit code in the flag, and a
    warm shutdown's is 0, so only None and False mean none (as ``state.maybe_shutdown``)."""
    return any(flag is not None and flag is not False
               for flag in (worker_state.should_stop, worker_state.should_terminate))


class Observer:
    """The observation runtime of one worker."""

    def __init__(self, app: Celery, config: ObserveConfig,
                 registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = TaskMetrics(self.registry, config.buckets)
        self.mask = Masker.for_app(app)
        self.faults = FaultLog(self.metrics.internal_errors, mask=self.mask)
        self._args_log_filter = TaskArgsLogFilter()
        self.history = TaskHistory(config.history_size)
        dropped = self.metrics.dropped_label_values
        task_names = BoundedLabel("task_name", config.max_task_names, config.task_names_allow,
                                  config.task_names_deny)
        self.recorder = Recorder(self.metrics, self.history, task_names, clock=clock)
        self.exposition = Exposition(self.recorder, self.metrics, self.registry, self.faults)
        self.task_code_metrics = TaskMetricsReceiver(
            self.registry, self.faults, on_drop=lambda label: dropped.labels(label).inc())
        self.caches = CacheSet(clock=clock)
        for component, collector in (  # the failure rate is the exposition's, guarded there
                ("pool metrics", PoolCollector(lambda: self.worker, lambda: self.consumer)),
                ("cache metrics", CacheCollector(self.caches))):
            self.registry.register(GuardedCollector(component, collector, self.faults))
        self.queue_reader = QueueReader(app, self.faults, cache=self.caches.get("queue_status"))
        self.registry.register(QueueLengthCollector(self.queue_reader, self.queue_names))
        self.instrumentation = TaskInstrumentation(app, self.recorder, self.faults)
        self.server: ObserveHTTPServer | None = None
        self.resources: ResourceMonitor | None = None
        self.worker: Any = None
        self.consumer: Any = None
        self.pool_name = "unknown"
        self._clock = clock
        self._started: float | None = None
        self._last_tick: float | None = None
        self._hub: Any = None

    # --- lifecycle, called by the bootsteps ---------------------------------------------

    def attach(self, worker: Any) -> None:
        """Bind to the worker being built and hook its tasks before strategies exist."""
        self.worker = worker
        self.pool_name = _pool_name(worker)
        self.metrics.worker_info.labels(
            worker.hostname, celery.__version__, self.pool_name, str(self.concurrency)).set(1)
        self.instrumentation.apply()
        if not self.config.show_task_args:  # Celery logs a task's arguments at debug level
            logging.getLogger("celery.pool").addFilter(self._args_log_filter)
        self.task_code_metrics.open_pipe()  # before the pool forks: every child inherits it
        self.resources = ResourceMonitor(
            lambda: pool_child_pids(getattr(worker, "pool", None)), self.faults,
            interval=self.config.resource_interval,
            max_memory_per_child_kib=getattr(worker, "max_memory_per_child", None))
        self.registry.register(self.resources)

    def start(self) -> None:
        """Start the resource monitor and the HTTP server (a busy port is logged, not fatal)."""
        self._started = self._clock()
        self._each_safely("start", {"resources": getattr(self.resources, "start", None),
                                    "task metrics": self.task_code_metrics.start})
        try:
            self.server = ObserveHTTPServer(self.config.address, self.config.port, routes(self),
                                            self.faults, inline_paths=INLINE_PATHS)
        except OSError as exc:
            fix = ("Give each worker on this host its own port with --observe-port (or "
                   "observe_port / CELERY_OBSERVE_PORT), or 0 for any free port."
                   if exc.errno == errno.EADDRINUSE else
                   "Give an address of this host with --observe-address (or observe_address "
                   "/ CELERY_OBSERVE_ADDRESS), such as 0.0.0.0, 127.0.0.1 or ::.")
            logger.error(
                "celery-observe: cannot listen on %s:%s (%s). The worker runs on and keeps "
                "recording, but /metrics and the probes are not served. %s",
                self.config.address, self.config.port, exc.strerror or exc, fix)
            return
        self.server.start()
        logger.info("celery-observe: serving /metrics, /healthz, /readyz and /status on %s:%s",
                    self.config.address, self.server.bound_port)

    def consumer_started(self, consumer: Any) -> None:
        """Hook tasks registered late and follow the event loop's ticks (each (re)connect)."""
        self.consumer = consumer
        try:
            if self.instrumentation.apply():
                consumer.update_strategies()
        except Exception as exc:  # noqa: BLE001 - tasks run on, some unobserved
            self.faults.report("consumer start", exc)
        hub = getattr(consumer, "hub", None)
        if hub is not None and hasattr(hub, "on_tick"):
            self._hub = hub
            self.tick()
            hub.on_tick.add(self.tick)

    def tick(self) -> None:
        """Called by the worker's event loop on every iteration: it must never raise there."""
        try:
            self._last_tick = self._clock()
        except Exception as exc:  # noqa: BLE001
            self.faults.report("loop tick", exc)

    def stop(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        """Stop serving, release the port and unhook the tasks; idempotent, never raises.

        ``timeout`` is one budget for every thread there is to join, shared in turn, so a
        worker's shutdown waits for us at most that long however many parts we stop.
        """
        deadline = time.monotonic() + timeout

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        server, self.server = self.server, None
        hub, self._hub = self._hub, None
        resources = self.resources
        self._each_safely("stop", {
            "http server": None if server is None else lambda: server.stop(remaining()),
            "resources": None if resources is None else lambda: resources.stop(remaining()),
            "task metrics": lambda: self.task_code_metrics.stop(remaining()),
            "queue lengths": self.queue_reader.close,
            "loop tick": None if hub is None else functools.partial(hub.on_tick.discard,
                                                                    self.tick),
            "instrumentation": self.instrumentation.restore,
            "task args log filter": functools.partial(
                logging.getLogger("celery.pool").removeFilter, self._args_log_filter),
        })

    def _each_safely(self, phase: str, steps: Mapping[str, Callable[[], Any] | None]) -> None:
        """Run each step; a fault in one is reported and the others still run."""
        for component, step in steps.items():
            try:
                if step is not None:
                    step()
            except Exception as exc:  # noqa: BLE001 - the worker runs on without it
                self.faults.report(f"{phase} {component}", exc)

    @property
    def concurrency(self) -> int | None:
        """What the pool really runs at once (the solo pool ignores -c; autoscale changes it)."""
        return pool_size(getattr(self.worker, "pool", None)) or getattr(
            self.worker, "concurrency", None)

    @property
    def bound_port(self) -> int | None:
        return self.server.bound_port if self.server is not None else None

    # --- what the endpoints answer ------------------------------------------------------

    def liveness(self) -> ProbeResult:
        tick_age = None if self._last_tick is None else self._clock() - self._last_tick
        inline = self.pool_name in _SOLO_POOLS and bool(
            snapshot(worker_state.active_requests, self.faults))
        reconnecting = self.consumer is not None and self.consumer.connection is None
        return liveness(tick_age, self.config.liveness_timeout, inline_task_running=inline,
                        reconnecting=reconnecting)

    def readiness(self) -> ProbeResult:
        consumer = self.consumer
        # Celery's own test of a fully started blueprint: its state is RUN from the first
        # step on, and a step that follows the connection (the heartbeat's first event)
        # can wait on the broker for as long as it is away, before the event loop runs.
        started = (consumer is not None and consumer.blueprint.state == bootsteps.RUN
                   and consumer.blueprint.started == len(consumer.steps))
        return readiness(
            started=started,
            connected=started and consumer.connection is not None,
            consuming=started and getattr(consumer, "task_consumer", None) is not None,
            shutting_down=shutdown_requested(),
        )

    def queue_names(self) -> list[str]:
        """The queues this worker consumes."""
        return sorted(consumed_queues(self.app))

    def status(self) -> WorkerStatus:
        """The worker's picture from what it holds already: it is cached and broadcast, so
        nothing here asks the OS (resources come from the monitor's last sample)."""
        worker = self.worker
        active, reserved = active_and_reserved(self.faults)
        now = time.time()
        processes = [] if self.resources is None else self.resources.latest()
        prefetch = getattr(getattr(self.consumer, "qos", None), "value", None)
        return WorkerStatus({
            "hostname": getattr(worker, "hostname", None),
            "pid": os.getpid(),
            "pool": self.pool_name,
            "concurrency": self.concurrency,
            "celery_version": celery.__version__,
            "queues": self.queue_names(),
            "http_address": None if self.bound_port is None else (
                self.config.advertise_address or advertised_address(self.config.address)),
            "http_port": self.bound_port,
            "active": [
                ActiveTask(id=request.id, name=request.name, worker_pid=request.worker_pid,
                           runtime_seconds=None if request.time_start is None
                           else round(now - request.time_start, 3))
                for request in active
            ],
            "active_count": len(active),
            "reserved_count": len(reserved),
            "counts": self.recorder.counts(),
            "ready": self.readiness().ok,
            "uptime_seconds": None if self._started is None else round(
                self._clock() - self._started, 3),
            "prefetch_count": prefetch if isinstance(prefetch, int) else None,
            "processes": processes,
            "rss_bytes": sum(p["rss_bytes"] for p in processes) if processes else None,
        })

    def health(self) -> WorkerHealth:
        """This worker's own view of its health, for the cluster's verdict."""
        alive, ready = self.liveness(), self.readiness()
        active, reserved = active_and_reserved(self.faults)
        return WorkerHealth({
            "hostname": getattr(self.worker, "hostname", None),
            "alive": alive.ok, "ready": ready.ok,
            "liveness": alive.body, "readiness": ready.body,
            "active_count": len(active),
            "reserved_count": len(reserved),
            "queues": self.queue_names(),
            "internal_errors": int(sum(
                sample.value for family in self.metrics.internal_errors.collect()
                for sample in family.samples if sample.name.endswith("_total"))),
        })

    def _describe(self, request: Any) -> TaskInfo:
        shown = self.config.show_task_args
        return TaskInfo(id=request.id, name=request.name, worker_pid=request.worker_pid,
                        time_start=request.time_start,
                        args=request.argsrepr if shown else REDACTED,
                        kwargs=request.kwargsrepr if shown else REDACTED)

    def tasks(self) -> WorkerTasks:
        """Active, reserved (prefetched, not started) and scheduled (waiting on ETA) tasks."""
        active, reserved = active_and_reserved(self.faults)
        scheduled: list[ScheduledTask] = []
        timer = getattr(self.consumer, "timer", None)
        for waiting in snapshot(getattr(getattr(timer, "schedule", None), "queue", ()),
                                self.faults):
            request: Any = next(iter(getattr(waiting.entry, "args", None) or ()), None)
            if hasattr(request, "eta") and hasattr(request, "argsrepr"):
                eta = request.eta.isoformat() if request.eta else None
                scheduled.append(ScheduledTask(**self._describe(request), eta=eta))
        return WorkerTasks(active=[self._describe(r) for r in active],
                           reserved=[self._describe(r) for r in reserved], scheduled=scheduled)

    def collect(self) -> Iterable[Metric]:
        """Every family ``/metrics`` shows, so ``generate_latest(observer)`` works."""
        yield from self.registry.collect()
        yield from self.exposition.collect()
