"""The worker's end of task metrics: apply the updates task code sends, with bounds.

Task code records through :mod:`celery_observe.task_side.metrics`; in a pool child each
update arrives here as one message on a pipe opened before the pool forks, in the main
process (threads and solo pools) it is applied directly. See that module for why a pipe.
"""

from __future__ import annotations

import os
import pickle
import select
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..cardinality import OVERFLOW, BoundedLabel
from ..faults import FaultLog
from ..task_side import metrics as task_side
from ..task_side.metrics import FRAME, KINDS, ChildPipe, Definition, Update


class TaskCodeError(Exception):
    """A fault celery-observe met in task code, maybe in a pool child: its traceback as text."""


class TaskMetricsReceiver:
    """Applies task metric messages to the worker's registry, with bounds.

    At most ``max_metrics`` metric names and ``max_series`` label sets per metric (more
    become the label value ``other``); a name redefined with another kind or labels is
    refused and reported once. A fault sent by task code
    (:func:`~celery_observe.task_side.metrics.report_fault`) is reported to ``faults``.
    """

    def __init__(self, registry: CollectorRegistry, faults: FaultLog, *, max_metrics: int = 200,
                 max_series: int = 1000, on_drop: Callable[[str], None] | None = None) -> None:
        self._registry = registry
        self._faults = faults
        self._max_metrics = max_metrics
        self._max_series = max_series
        self._on_drop = on_drop
        self._metrics: dict[str, tuple[Definition, Any, BoundedLabel]] = {}
        self._lock = threading.Lock()
        self._pipe: ChildPipe | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def apply(self, message: Update) -> None:
        if len(message) == 3:  # a fault: (FAULT, component, text)
            _, component, text = message
            self._faults.report(component, TaskCodeError(text))
            return
        definition, values, op, value = message
        entry = self._metrics.get(definition[1]) or self._define(definition)
        if entry is None:
            return
        known, metric, series = entry
        if known != definition:
            raise ValueError(f"task metric {definition[1]!r} was defined as {known[0]} with "
                             f"labels {known[3]} and is used as {definition[0]} with labels "
                             f"{definition[3]}")
        if values:
            if series("\x1f".join(values)) == OVERFLOW:
                values = (OVERFLOW,) * len(values)
                if self._on_drop is not None:
                    self._on_drop(definition[1])
            child = metric.labels(*values)
        else:
            child = metric
        getattr(child, op)(value)

    def _define(self, definition: Definition) -> tuple[Definition, Any, BoundedLabel] | None:
        kind, name, documentation, labelnames, buckets = definition
        with self._lock:
            if name in self._metrics:
                return self._metrics[name]
            if len(self._metrics) >= self._max_metrics:
                if self._on_drop is not None:
                    self._on_drop("task_metric_name")
                return None
            if kind not in KINDS:
                raise ValueError(f"unknown task metric kind {kind!r}")
            options: dict[str, Any] = {"registry": self._registry}
            if kind == "histogram" and buckets:
                options["buckets"] = buckets
            cls = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[kind]
            metric = cls(name, documentation, labelnames, **options)
            series = BoundedLabel(name, self._max_series)
            self._metrics[name] = (definition, metric, series)
            return self._metrics[name]

    # --- the pipe from pool children -------------------------------------------------

    def open_pipe(self, pipe: ChildPipe | None = None) -> None:
        """Read the pool children's updates from ``pipe``, opened before the pool forked;
        without one, open one (before the pool forks), unless a pipe was given already."""
        if pipe is not None:
            self._pipe = pipe
        elif self._pipe is None:
            self._pipe = ChildPipe()

    @property
    def _read_fd(self) -> int | None:
        return None if self._pipe is None else self._pipe.read_fd

    @property
    def _write_fd(self) -> int | None:
        return None if self._pipe is None else self._pipe.write_fd

    def start(self) -> None:
        """Apply updates directly in this process and read the children's from the pipe."""
        task_side.set_sink(self._apply_safely)
        if self._read_fd is not None:
            self._thread = threading.Thread(target=self._read_loop, daemon=True,
                                            name="celery-observe-task-metrics")
            self._thread.start()

    def _apply_safely(self, message: Update) -> None:
        try:
            self.apply(message)
        except Exception as exc:  # noqa: BLE001
            self._faults.report("task metrics", exc)

    def _read_loop(self) -> None:
        fd = self._read_fd
        if fd is None or self._pipe is None:
            return
        try:
            self._read_until_stopped(fd)
        finally:
            self._pipe.read_fd = None
            os.close(fd)

    def _read_until_stopped(self, fd: int) -> None:
        buffer = b""
        while True:
            try:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    if self._stop.is_set():  # stop only once the pipe is drained
                        return
                    continue
                chunk = os.read(fd, 65536)
            except OSError as exc:
                self._faults.report("task metrics", exc)
                return
            if not chunk:  # every write end is closed (stop() closes ours): nothing can come
                return
            buffer += chunk
            while len(buffer) >= FRAME.size:
                (size,) = FRAME.unpack_from(buffer)
                if len(buffer) < FRAME.size + size:
                    break
                frame, buffer = buffer[FRAME.size:FRAME.size + size], buffer[FRAME.size + size:]
                try:
                    self.apply(pickle.loads(frame))
                except Exception as exc:  # noqa: BLE001
                    self._faults.report("task metrics", exc)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reading; idempotent. Messages still in the pipe are applied first.

        The read end is the reader thread's to close when it ends: closed under a thread
        that did not stop in ``timeout``, its number could be reused by another file.
        """
        task_side.set_sink(None)
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        pipe = self._pipe
        if pipe is None:
            return
        if thread is None and pipe.read_fd is not None:
            os.close(pipe.read_fd)
            pipe.read_fd = None
        if pipe.write_fd is not None:
            os.close(pipe.write_fd)
            pipe.write_fd = None
