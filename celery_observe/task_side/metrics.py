"""Metrics that task code records itself, summed exactly in the worker's main process.

Under the prefork pool a task runs in a pool child, where no HTTP server lives and which
may be replaced after every task (``--max-tasks-per-child``). Prometheus' own multiprocess
mode needs an environment variable set before import, a shared directory and cleanup of
dead children's files. Instead each child writes every update as one small message to a
pipe that the observed worker opens before it forks its pool; a thread in the main process
applies the messages to the worker's registry. A message is written whole before the task
returns (writes up to PIPE_BUF bytes are atomic), so a recycled or killed child loses
nothing it recorded, and because messages carry increments, nothing is counted twice.
Under the threads and solo pools, and in the main process, updates apply directly. This
module is what task code imports, and it imports no Prometheus: the worker's receiver
(:mod:`celery_observe.worker.task_metrics_receiver`) owns the real metrics.

Faults celery-observe meets in task code (a monitored task's label that cannot be
extracted) travel the same way, as text (:func:`report_fault`), and the worker counts them
in ``celery_observe_internal_errors_total{component}``, where the counter lives.

Outside an observed worker (a unit test calling the task, a producer process) updates and
faults are dropped silently, so instrumented task code runs anywhere.

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
import functools
import os
import pickle
import re
import struct
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from ..faults import FaultLog

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
FRAME = struct.Struct("!I")
#: Writes up to this size are atomic on a pipe (POSIX PIPE_BUF is at least 512; Linux 4096).
MAX_MESSAGE = 4096 - FRAME.size
KINDS = ("counter", "gauge", "histogram")

Definition = tuple[str, str, str, tuple[str, ...], tuple[float, ...]]  # kind, name, doc, ...
Message = tuple[Definition, tuple[str, ...], str, float]
#: A fault of celery-observe in task code: (:data:`FAULT`, component, traceback text); the
#: only 3-tuple a sink is given.
Fault = tuple[str, str, str]
#: What a sink is given: a metric update or a fault.
Update = Message | Fault
FAULT: Final = "fault"
#: Bytes of traceback a fault carries (its end, where the exception is): a frame fits a write.
MAX_FAULT_TEXT = 3000


def _drop(_update: Update) -> None:
    """The sink outside an observed worker."""


_sink: Callable[[Update], None] = _drop


def report_fault(component: str, exc: BaseException) -> None:
    """Have the worker count a fault of celery-observe's task-side code; never raises.

    The worker's :class:`~celery_observe.faults.FaultLog` counts it under ``component`` and
    logs it (masked) the first time. The traceback travels as text: an exception may not
    pickle. Outside an observed worker it is dropped, as updates are.
    """
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        data = text.encode()
        if len(data) > MAX_FAULT_TEXT:
            text = "[...]" + data[-MAX_FAULT_TEXT:].decode(errors="ignore")
        _sink((FAULT, component, f"in process {os.getpid()}:\n{text}"))
    except Exception:  # noqa: BLE001 - reporting a fault must not become one
        pass


def set_sink(sink: Callable[[Update], None] | None) -> None:
    """Where this process's updates go from now on: the worker's receiver, a pipe to it (a
    pool child), or nowhere (None: outside an observed worker)."""
    global _sink
    _sink = _drop if sink is None else sink


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


class PipeWriter:
    """The sink in a prefork child: one atomic write per update, never blocking for long.

    A failure is logged once per child and never reaches the task.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._faults = FaultLog()

    def __call__(self, message: Update) -> None:
        try:
            self._write(message)
        except Exception as exc:  # noqa: BLE001
            self._faults.report("task metrics (pool child)", exc)

    def _write(self, message: Update) -> None:
        frame = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if len(frame) > MAX_MESSAGE:
            raise ValueError(f"task metric update of {len(frame)} bytes is over the "
                             f"{MAX_MESSAGE}-byte limit: use shorter label values")
        data = FRAME.pack(len(frame)) + frame
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


def _in_child(pipe: weakref.ref[ChildPipe]) -> None:
    """At fork, in the child: write updates to the pipe (if it is still open)."""
    alive = pipe()
    if alive is not None:
        alive.become_child()


class ChildPipe:
    """The pipe from pool children to the worker's main process.

    Opened before the pool forks, so every child inherits its write end; in each child
    forked while it is open, updates go to a :class:`PipeWriter` on it. It loads nothing
    of the worker's, so a worker can open it before its pool forks and build everything
    that reads it after: its children then do not carry that in their memory.
    """

    def __init__(self) -> None:
        self.read_fd: int | None
        self.write_fd: int | None
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        # A weak reference: at-fork hooks live as long as the process, and a process that
        # builds many workers (a test session) must not keep every pipe alive.
        os.register_at_fork(after_in_child=functools.partial(_in_child, weakref.ref(self)))

    def become_child(self) -> None:
        """In a forked pool child: close the read end and send updates down the pipe."""
        if self.read_fd is None or self.write_fd is None:
            return
        os.close(self.read_fd)
        self.read_fd = None
        set_sink(PipeWriter(self.write_fd))

    def close(self) -> None:
        """Close both ends that are open; idempotent."""
        for fd in (self.read_fd, self.write_fd):
            if fd is not None:
                os.close(fd)
        self.read_fd = self.write_fd = None
