"""The resource monitor samples real processes: the worker's main process and its children."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
from celery import Celery
from prometheus_client import CollectorRegistry, Counter

from celery_observe.faults import FaultLog
from celery_observe.worker.resources import THREAD_NAME, ResourceMonitor, pool_child_pids

from .psutil_doubles import psutil_failing_for

SLEEPER = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"]
FAULTS = "celery_observe_internal_errors_total"


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture
def spawn() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts sleeping child processes; kills and reaps them all afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(SLEEPER, stdout=subprocess.PIPE)
        started.append(process)
        assert process.stdout is not None
        process.stdout.readline()  # the interpreter is up: measuring it is meaningful
        return process

    yield start
    for process in started:
        _stop(process)


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry per test."""
    return CollectorRegistry()


@pytest.fixture
def faults(registry: CollectorRegistry) -> FaultLog:
    """A FaultLog counting into ``registry``."""
    counter = Counter(FAULTS, "faults", ["component"], registry=registry)
    return FaultLog(counter)


def _monitor(
    registry: CollectorRegistry, faults: FaultLog, pids: list[int], **kwargs: Any
) -> ResourceMonitor:
    monitor = ResourceMonitor(lambda: list(pids), faults, **kwargs)
    registry.register(monitor)
    return monitor


def _value(registry: CollectorRegistry, name: str, process: str | None = None) -> float | None:
    labels = {} if process is None else {"process": process}
    return registry.get_sample_value(name, labels)


def _get(registry: CollectorRegistry, name: str, process: str | None = None) -> float:
    value = _value(registry, name, process)
    assert value is not None, f"no sample {name}{{process={process!r}}}"
    return value


def _faults(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value(FAULTS, {"component": "resources"})


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_main_and_children_export_all_series(
    registry: CollectorRegistry, faults: FaultLog, spawn: Callable[[], subprocess.Popen[bytes]]
) -> None:
    """Main and two children each get memory, cpu, fds, threads and io; children get an age."""
    pids = [spawn().pid, spawn().pid]
    _monitor(registry, faults, pids).sample()
    for label in ["main", *map(str, pids)]:
        assert _get(registry, "celery_process_resident_memory_bytes", label) > 1e6
        assert _get(registry, "celery_process_threads", label) >= 1
        assert _get(registry, "celery_process_open_fds", label) >= 0
        assert _get(registry, "celery_process_cpu_percent", label) >= 0
        assert _get(registry, "celery_process_io_read_bytes", label) >= 0
        assert _get(registry, "celery_process_io_write_bytes", label) >= 0
    for pid in pids:
        assert _get(registry, "celery_worker_child_age_seconds", str(pid)) >= 0
    assert _value(registry, "celery_worker_child_age_seconds", "main") is None
    assert _value(registry, "celery_worker_pool_processes") == 2
    assert _value(registry, "celery_observe_resource_sample_timestamp_seconds") is not None
    assert _faults(registry) is None


def test_child_age_uses_the_injected_clock(
    registry: CollectorRegistry, faults: FaultLog, spawn: Callable[[], subprocess.Popen[bytes]]
) -> None:
    """A child's age is clock() minus its create_time, and the sample is stamped with clock()."""
    pid = spawn().pid
    born = psutil.Process(pid).create_time()
    _monitor(registry, faults, [pid], clock=lambda: born + 42.0).sample()
    assert _value(registry, "celery_worker_child_age_seconds", str(pid)) == pytest.approx(42.0)
    assert _value(registry, "celery_observe_resource_sample_timestamp_seconds") == born + 42.0


def test_nothing_is_collected_before_the_first_sample(
    registry: CollectorRegistry, faults: FaultLog
) -> None:
    """Before any sample the monitor exports no series at all."""
    monitor = _monitor(registry, faults, [])
    assert list(monitor.collect()) == []


def test_killed_child_series_disappear_on_next_sample(
    registry: CollectorRegistry, faults: FaultLog, spawn: Callable[[], subprocess.Popen[bytes]]
) -> None:
    """A child that exited has no series after the next sample, even if still listed."""
    survivor, victim = spawn(), spawn()
    monitor = _monitor(registry, faults, [survivor.pid, victim.pid])
    monitor.sample()
    assert _value(registry, "celery_process_threads", str(victim.pid)) is not None
    _stop(victim)
    monitor.sample()
    for name in ("celery_process_resident_memory_bytes", "celery_worker_child_age_seconds"):
        assert _value(registry, name, str(victim.pid)) is None
        assert _value(registry, name, str(survivor.pid)) is not None
    assert _value(registry, "celery_worker_pool_processes") == 1
    assert _faults(registry) is None


def test_cpu_percent_is_measured_from_the_second_sample(
    registry: CollectorRegistry, faults: FaultLog
) -> None:
    """The second sample reports the CPU the main process burnt since the first."""
    monitor = _monitor(registry, faults, [])
    monitor.sample()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    monitor.sample()
    assert _get(registry, "celery_process_cpu_percent", "main") > 0


def test_max_memory_per_child_is_exported_in_bytes_only_when_set(faults: FaultLog) -> None:
    """worker_max_memory_per_child (KiB) becomes a byte gauge; unset means no series."""
    with_limit, without = CollectorRegistry(), CollectorRegistry()
    _monitor(with_limit, faults, [], max_memory_per_child_kib=200_000).sample()
    _monitor(without, faults, []).sample()
    name = "celery_worker_max_memory_per_child_bytes"
    assert _value(with_limit, name) == 200_000 * 1024
    assert _value(without, name) is None


def test_interval_must_be_positive(faults: FaultLog) -> None:
    """A non-positive interval is refused with a message naming it."""
    with pytest.raises(ValueError, match="interval"):
        ResourceMonitor(list, faults, interval=0)


def test_child_vanishing_between_listing_and_sampling_is_skipped_silently(
    registry: CollectorRegistry, faults: FaultLog, spawn: Callable[[], subprocess.Popen[bytes]]
) -> None:
    """A child gone while being measured is left out and no fault is reported."""
    alive, vanishing = spawn().pid, spawn().pid

    fake = psutil_failing_for(vanishing, psutil.NoSuchProcess)
    _monitor(registry, faults, [alive, vanishing], psutil_module=fake).sample()
    assert _value(registry, "celery_process_threads", str(alive)) is not None
    assert _value(registry, "celery_process_threads", str(vanishing)) is None
    assert _value(registry, "celery_worker_pool_processes") == 1
    assert _faults(registry) is None


def test_failing_pid_source_reports_one_fault_and_keeps_the_snapshot(
    registry: CollectorRegistry, faults: FaultLog
) -> None:
    """A raising child_pids is counted once as a fault and the previous values stay."""
    calls = 0

    def child_pids() -> list[int]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("pool is broken")
        return []

    monitor = ResourceMonitor(child_pids, faults, clock=iter([100.0, 200.0]).__next__)
    registry.register(monitor)
    monitor.sample()
    monitor.sample()
    assert _faults(registry) == 1
    assert _value(registry, "celery_observe_resource_sample_timestamp_seconds") == 100.0
    assert _value(registry, "celery_process_threads", "main") is not None


def test_thread_samples_repeatedly_and_stops_within_a_second(
    registry: CollectorRegistry, faults: FaultLog
) -> None:
    """The named thread samples every interval and stop() ends it in under a second."""
    calls = 0

    def child_pids() -> list[int]:
        nonlocal calls
        calls += 1
        return []

    monitor = ResourceMonitor(child_pids, faults, interval=0.05)
    monitor.start()
    try:
        _wait_for(lambda: calls >= 2)
        assert any(thread.name == THREAD_NAME for thread in threading.enumerate())
    finally:
        started = time.monotonic()
        monitor.stop()
        elapsed = time.monotonic() - started
    assert elapsed < 1.0
    assert not any(thread.name == THREAD_NAME for thread in threading.enumerate())
    monitor.stop()  # a second stop is harmless


def test_stop_without_start_is_harmless(faults: FaultLog) -> None:
    """stop() on a monitor that never started returns quietly."""
    ResourceMonitor(list, faults).stop()


def test_pool_child_pids_reads_a_real_prefork_pool() -> None:
    """The pids come from the prefork pool's own processes, all children of this process."""
    from celery.concurrency.prefork import TaskPool

    app = Celery("resources-test", set_as_current=False)
    pool = TaskPool(2, app=app, initargs=(app, "resources-test@localhost"))
    pool.start()
    try:
        expected = [process.pid for process in pool._pool._pool]
        pids = pool_child_pids(pool)
        assert pids == expected
        assert len(pids) == 2
        assert all(psutil.Process(pid).ppid() == os.getpid() for pid in pids)
    finally:
        with contextlib.suppress(Exception):
            pool.terminate()
        app.close()


def test_pool_child_pids_is_empty_without_child_processes() -> None:
    """No pool, a threads pool or an odd object all give [] without raising."""
    from celery.concurrency.thread import TaskPool

    threads = TaskPool(2)
    threads.start()
    try:
        assert pool_child_pids(threads) == []
    finally:
        threads.stop()
    assert pool_child_pids(None) == []
    assert pool_child_pids(types.SimpleNamespace(_pool=types.SimpleNamespace(_pool=7))) == []
