"""Metrics that task code records itself, summed exactly in the worker's main process.

Under the prefork pool a task runs in a pool child, where no HTTP server lives and which
may be replaced after every task (``--max-tasks-per-child``). Prometheus' own multiprocess
mode needs an environment variable set before import, a shared directory and cleanup of
dead children's files. Instead each child writes every update as one small message to a
pipe that the observed worker opens before it forks its pool; a thread in the main process
applies the messages to the worker's registry. A message is written whole before the task
returns (writes up to PIPE_BUF bytes are atomic), so a recycled or killed child loses
nothing it recorded, and because messages carry increments, nothing is counted twice.
Under the threads and solo pools, and in the main process, updates apply directly.

Outside an observed worker (a unit test calling the task, a producer process) updates are
dropped silently, so instrumented task code runs anywhere.

    from celery_observe import TaskCounter, TaskHistogram

    TRAINED = TaskCounter("ml_models_trained_total", "Models trained.", ["model_type"])
    TRAINING = TaskHistogram("ml_training_duration_seconds", "Training time.", ["model_type"],
                             buckets=(1, 10, 60, 600))

    @app.task
    def train(model_type):
        with TRAINING.labels(model_type).time():
            ...
        TRAINED.labels(model_type).inc()
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import select
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .cardinality import OVERFLOW, BoundedLabel
from .faults import FaultLog

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_FRAME = struct.Struct("!I")
#: Writes up to this size are atomic on a pipe (POSIX PIPE_BUF is at least 512; Linux 4096).
MAX_MESSAGE = 4096 - _FRAME.size
_KINDS = ("counter", "gauge", "histogram")

Definition = tuple[str, str, str, tuple[str, ...], tuple[float, ...]]  # kind, name, doc, ...
Message = tuple[Definition, tuple[str, ...], str, float]


def _drop(_message: Message) -> None:
    """The sink outside an observed worker."""


_sink: Callable[[Message], None] = _drop


class _Metric:
    """A metric definition that sends its updates to the current process's sink."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError(f"{type(self).__name__}({name!r}): not a valid Prometheus metric "
                             "name (letters, digits, _ and :, not starting with a digit)")
        bad = [label for label in labelnames if not _LABEL.match(label)
               or label.startswith("__")]
        if bad:
            raise ValueError(f"{type(self).__name__}({name!r}): invalid label names {bad}")
        self.definition: Definition = (self.kind, name, documentation, tuple(labelnames),
                                       tuple(float(b) for b in buckets))

    def labels(self, *values: Any) -> _Child:
        names = self.definition[3]
        if len(values) != len(names):
            raise ValueError(f"{self.definition[1]} takes {len(names)} label values "
                             f"({', '.join(names) or 'none'}), got {len(values)}")
        return _Child(self.definition, tuple(str(value) for value in values))

    def _unlabelled(self) -> _Child:
        return self.labels()


class _Child:
    __slots__ = ("_definition", "_values")

    def __init__(self, definition: Definition, values: tuple[str, ...]) -> None:
        self._definition = definition
        self._values = values

    def _send(self, op: str, value: float) -> None:
        _sink((self._definition, self._values, op, float(value)))

    def inc(self, amount: float = 1.0) -> None:
        if self._definition[0] == "counter" and amount < 0:
            raise ValueError("a counter can only go up: inc() takes an amount >= 0")
        self._send("inc", amount)

    def dec(self, amount: float = 1.0) -> None:
        self._send("inc", -amount)

    def set(self, value: float) -> None:
        self._send("set", value)

    def observe(self, value: float) -> None:
        self._send("observe", value)

    @contextmanager
    def time(self) -> Iterator[None]:
        """Observe how long the block takes."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started)


class TaskCounter(_Metric):
    """A counter task code increments; ``inc()`` or ``labels(...).inc()``."""

    kind = "counter"

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)


class TaskGauge(_Metric):
    """A gauge task code sets; the last value written by any process wins."""

    kind = "gauge"

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._unlabelled().dec(amount)


class TaskHistogram(_Metric):
    """A histogram task code observes into; ``buckets`` default to Prometheus' own."""

    kind = "histogram"

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)

    def time(self) -> Any:
        return self._unlabelled().time()


class TaskMetricsReceiver:
    """Applies task metric messages to the worker's registry, with bounds.

    At most ``max_metrics`` metric names and ``max_series`` label sets per metric (more
    become the label value ``other``); a name redefined with another kind or labels is
    refused and reported once.
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
        self._read_fd: int | None = None
        self._write_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def apply(self, message: Message) -> None:
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
            if kind not in _KINDS:
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

    def open_pipe(self) -> None:
        """Open the pipe before the pool forks, so every child inherits its write end."""
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        os.register_at_fork(after_in_child=self._become_child)

    def _become_child(self) -> None:
        global _sink
        if self._read_fd is None or self._write_fd is None:
            return
        os.close(self._read_fd)
        self._read_fd = None
        _sink = _PipeWriter(self._write_fd)

    def start(self) -> None:
        """Apply updates directly in this process and read the children's from the pipe."""
        global _sink
        _sink = self._apply_safely
        if self._read_fd is not None:
            self._thread = threading.Thread(target=self._read_loop, daemon=True,
                                            name="celery-observe-task-metrics")
            self._thread.start()

    def _apply_safely(self, message: Message) -> None:
        try:
            self.apply(message)
        except Exception as exc:  # noqa: BLE001
            self._faults.report("task metrics", exc)

    def _read_loop(self) -> None:
        fd = self._read_fd
        if fd is None:
            return
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
            buffer += chunk
            while len(buffer) >= _FRAME.size:
                (size,) = _FRAME.unpack_from(buffer)
                if len(buffer) < _FRAME.size + size:
                    break
                frame, buffer = buffer[_FRAME.size:_FRAME.size + size], buffer[_FRAME.size + size:]
                try:
                    self.apply(pickle.loads(frame))
                except Exception as exc:  # noqa: BLE001
                    self._faults.report("task metrics", exc)

    def stop(self) -> None:
        """Stop reading; idempotent. Messages still in the pipe are applied first."""
        global _sink
        _sink = _drop
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for fd in (self._read_fd, self._write_fd):
            if fd is not None:
                os.close(fd)
        self._read_fd = self._write_fd = None


class _PipeWriter:
    """The sink in a prefork child: one atomic write per update, never blocking for long.

    A failure is logged once per child and never reaches the task.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._faults = FaultLog()

    def __call__(self, message: Message) -> None:
        try:
            self._write(message)
        except Exception as exc:  # noqa: BLE001
            self._faults.report("task metrics (pool child)", exc)

    def _write(self, message: Message) -> None:
        frame = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if len(frame) > MAX_MESSAGE:
            raise ValueError(f"task metric update of {len(frame)} bytes is over the "
                             f"{MAX_MESSAGE}-byte limit: use shorter label values")
        data = _FRAME.pack(len(frame)) + frame
        deadline = time.monotonic() + 1.0
        while True:
            try:
                os.write(self._fd, data)
                return
            except BlockingIOError:  # the main process is behind: wait a little
                if time.monotonic() > deadline:
                    raise TimeoutError("celery-observe: the worker's main process did not "
                                       "read task metrics for 1 s; update dropped") from None
                time.sleep(0.001)
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # the main process is gone
                    return
                raise
