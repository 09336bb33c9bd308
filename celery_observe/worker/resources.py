"""Resource usage of the worker's main process and its pool children, sampled off the hot path.

A daemon thread samples with psutil every ``interval`` seconds and swaps in an immutable
snapshot; a scrape, and ``observe_status`` through :meth:`ResourceMonitor.latest`, only
format that snapshot, so neither costs a psutil call nor raises. Child pids come from the
pool object (``pool_child_pids``), not from scanning ``/proc`` with
``psutil.Process.children()``, which alone cost ~3% throughput at one scrape per second.
Series carry a ``process`` label (``main`` or the child's pid) and only pids of the last
sample appear, so recycled children leave no stale series behind. A child that exits
between listing and sampling is left out silently; any other failure to find or measure
children is a fault, counted in ``celery_observe_internal_errors_total``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..config import positive_seconds
from ..faults import FaultLog
from ..shapes import ProcessResources

THREAD_NAME = "celery-observe-resources"
_STOP_TIMEOUT = 0.9  # stop() returns within a second even if a sample hangs

#: (metric name, help, attribute of ``_ProcessSample``) of the per-process gauges.
_PER_PROCESS: tuple[tuple[str, str, str], ...] = (
    ("celery_process_resident_memory_bytes", "Resident memory (RSS) of the process.", "rss"),
    ("celery_process_cpu_percent", "CPU use since the previous sample (100 = one core).", "cpu"),
    ("celery_process_open_fds", "Open file descriptors of the process.", "fds"),
    ("celery_process_threads", "Threads of the process.", "threads"),
    ("celery_process_io_read_bytes", "Bytes the process has read from storage.", "io_read"),
    ("celery_process_io_write_bytes", "Bytes the process has written to storage.", "io_write"),
    ("celery_worker_child_age_seconds", "Seconds since the pool child started.", "age"),
)


@dataclass(frozen=True)
class _ProcessSample:
    pid: int
    label: str
    rss: float
    cpu: float
    cpu_seconds: float  # user + system since the process started
    fds: float
    threads: float
    io_read: float | None  # None: io_counters unavailable or denied for this process
    io_write: float | None
    age: float | None  # None for the main process


@dataclass(frozen=True)
class _Snapshot:
    processes: tuple[_ProcessSample, ...]
    children: int
    timestamp: float


class PoolIntrospectionError(RuntimeError):
    """Celery's pool does not look as celery-observe expects; its children cannot be found."""


def pool_child_pids(pool: Any) -> list[int]:
    """Pids of a prefork pool's children, read from billiard's own list (no ``/proc`` scan).

    Returns ``[]`` for pools without child processes (threads, solo, gevent, eventlet), for a
    pool that is ``None``, and for a prefork pool not started or already stopped. Raises
    :class:`PoolIntrospectionError` for a running prefork pool whose process list is not
    where billiard keeps it: Celery's internals changed, and ``[]`` would show a busy pool
    as one without children. :class:`ResourceMonitor` counts that as a fault.
    """
    processes = getattr(getattr(pool, "_pool", None), "_pool", None)
    if not isinstance(processes, list):
        if _running_prefork(pool):
            raise PoolIntrospectionError(
                "celery-observe cannot find the pool's child processes: the running prefork "
                f"pool's _pool._pool is {type(processes).__name__}, not billiard's list of "
                "processes. This Celery or billiard is newer than celery-observe knows; "
                "please report it. Per-child resource metrics are missing meanwhile.")
        return []
    pids = []
    for process in list(processes):  # billiard's maintenance thread may change the list
        pid = getattr(process, "pid", None)  # None until the child has been forked
        if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
            pids.append(pid)
    return pids


def _running_prefork(pool: Any) -> bool:
    """Whether ``pool`` is Celery's prefork pool, started and not stopped."""
    prefork = sys.modules.get("celery.concurrency.prefork")  # not loaded: not a prefork pool
    task_pool = getattr(prefork, "TaskPool", None)
    if not isinstance(task_pool, type) or not isinstance(pool, task_pool):
        return False
    return bool(getattr(pool, "_state", None) == getattr(pool, "RUN", object()))


class ResourceMonitor(Collector):
    """Samples main + pool children in a thread; ``collect()`` serves the last snapshot."""

    def __init__(
        self,
        child_pids: Callable[[], Iterable[int]],
        faults: FaultLog,
        interval: float = 30.0,
        max_memory_per_child_kib: int | None = None,
        main_pid: int | None = None,
        psutil_module: Any = psutil,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_memory_per_child_kib is not None and max_memory_per_child_kib < 0:
            raise ValueError(
                f"max_memory_per_child_kib must be >= 0 (KiB), got {max_memory_per_child_kib!r}; "
                "pass None when worker_max_memory_per_child is not set."
            )
        self._child_pids = child_pids
        self._faults = faults
        self.interval = positive_seconds("interval", interval)
        self._max_memory_kib = max_memory_per_child_kib or None  # 0 disables it in Celery too
        self._main_pid = os.getpid() if main_pid is None else main_pid
        self._psutil = psutil_module
        self._clock = clock
        self._snapshot: _Snapshot | None = None
        self._processes: dict[int, Any] = {}  # pid -> psutil.Process; pids of the last sample
        self._sample_lock = threading.Lock()  # only writers take it; readers swap nothing
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Take one sample now; a fault is reported and the previous snapshot stays."""
        try:
            with self._sample_lock:
                self._sample()
        except Exception as exc:  # noqa: BLE001 - observation must not hurt the worker
            self._faults.report("resources", exc)

    def _sample(self) -> None:
        children = [pid for pid in dict.fromkeys(int(p) for p in self._child_pids())
                    if pid != self._main_pid]
        now = self._clock()
        kept: dict[int, Any] = {}
        samples = [self._measure(self._main_pid, "main", None, kept)]  # faults propagate
        gone = (self._psutil.NoSuchProcess, self._psutil.ZombieProcess)  # Zombie is NoSuch too
        for pid in children:
            try:
                samples.append(self._measure(pid, str(pid), now, kept))
            except gone:
                continue  # exited or recycled between listing and sampling: normal
            except Exception as exc:  # noqa: BLE001 - denied, or psutil changed: a fault
                self._faults.report("resources", exc)  # this child is left out, not the rest
        self._processes = kept  # objects of vanished pids are dropped here
        self._snapshot = _Snapshot(tuple(samples), len(samples) - 1, now)

    def _measure(
        self, pid: int, label: str, now: float | None, kept: dict[int, Any]
    ) -> _ProcessSample:
        process = self._processes.get(pid)
        if process is None or not process.is_running():  # is_running() also detects pid reuse
            process = self._psutil.Process(pid)
        with process.oneshot():
            if process.status() == getattr(self._psutil, "STATUS_ZOMBIE", "zombie"):
                raise self._psutil.ZombieProcess(pid)  # dead, not yet reaped: all zeros
            rss = process.memory_info().rss
            cpu = process.cpu_percent(interval=None)  # since the previous call on this object
            times = process.cpu_times()
            fds = process.num_fds()
            threads = process.num_threads()
            age = None if now is None else max(0.0, now - process.create_time())
        io_read = io_write = None
        try:
            io = process.io_counters()
            io_read, io_write = float(io.read_bytes), float(io.write_bytes)
        except (AttributeError, NotImplementedError, self._psutil.AccessDenied):
            pass  # no io_counters on this platform or for this process: omit just these
        kept[pid] = process
        return _ProcessSample(
            pid, label, float(rss), float(cpu), float(times.user + times.system), float(fds),
            float(threads), io_read, io_write, age
        )

    def latest(self) -> list[ProcessResources]:
        """The last sample's processes, main first; ``[]`` before the first sample."""
        snapshot = self._snapshot  # one read: a concurrent sample swaps, never mutates
        if snapshot is None:
            return []
        return [ProcessResources(pid=p.pid, role="main" if p.pid == self._main_pid else "child",
                                 rss_bytes=int(p.rss), cpu_seconds=round(p.cpu_seconds, 3))
                for p in snapshot.processes]

    def collect(self) -> Iterable[Metric]:
        """Gauges from the last snapshot; nothing before the first sample, never raises."""
        try:
            families = list(self._families())
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because of us
            self._faults.report("resources", exc)
            return []
        return families

    def _families(self) -> Iterator[Metric]:
        snapshot = self._snapshot  # one read: a concurrent sample swaps, never mutates
        if snapshot is None:
            return
        for name, documentation, attribute in _PER_PROCESS:
            family = GaugeMetricFamily(name, documentation, labels=["process"])
            for process in snapshot.processes:
                value = getattr(process, attribute)
                if value is not None:
                    family.add_metric([process.label], value)
            yield family
        yield GaugeMetricFamily(
            "celery_worker_pool_processes", "Pool child processes in the last sample.",
            value=snapshot.children,
        )
        if self._max_memory_kib is not None:
            yield GaugeMetricFamily(
                "celery_worker_max_memory_per_child_bytes",
                "worker_max_memory_per_child in bytes: a child above it is replaced.",
                value=self._max_memory_kib * 1024,
            )
        yield GaugeMetricFamily(
            "celery_observe_resource_sample_timestamp_seconds",
            "Unix time of the last successful resource sample.",
            value=snapshot.timestamp,
        )

    def start(self) -> None:
        """Start the sampling thread (samples at once, then every ``interval``); idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stopping,), name=THREAD_NAME, daemon=True
        )
        self._thread.start()

    def _run(self, stopping: threading.Event) -> None:
        while True:
            self.sample()  # reports its own faults, so the loop survives them
            if stopping.wait(self.interval):
                return

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Stop the thread within ``timeout``; idempotent, silent, fine without ``start()``."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
