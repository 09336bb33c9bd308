"""The monitoring seed's ``MonitoredTask`` base class and ``@monitor_task`` decorator.

Both record, from inside the task (so through :mod:`celery_observe.task_metrics`, exact
under prefork too), four metrics named ``<prefix>_started_total``, ``_completed_total``,
``_failed_total{error_type}`` and ``_duration_seconds``, labelled by ``task_name`` plus
labels extracted from the task's arguments, such as the seed's ``customer_id``::

    @app.task(base=MonitoredTask, monitor_labels={"customer_id": "customer_id"})
    def my_task(customer_id, arg1): ...

    @app.task
    @monitor_task(labels={"customer_id": lambda args, kwargs: kwargs["order"].customer_id})
    def other_task(order): ...

A label is taken from the argument of that name (positional, keyword, or the parameter's
default), or computed by a function of ``(args, kwargs)``. A label that cannot be extracted
(the argument is missing, the function raises) is ``""`` and the task runs as usual; the
worker counts each such fault in ``celery_observe_internal_errors_total{component=
"monitored task labels"}``, from pool children too (faults travel as task metrics do).
All tasks using one prefix must extract the same label names (Prometheus needs one label
set per metric name): give tasks with other labels their own ``monitor_prefix``. Retry,
Reject and Ignore are neither completed nor failed here; the worker-side
``celery_task_total`` counts them.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from ..error_types import exception_name
from .metrics import TaskCounter, TaskHistogram, report_fault

LabelSource = str | Callable[[tuple[Any, ...], dict[str, Any]], Any]
F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_PREFIX = "celery_monitored_task"
_PREDICATES = (Retry, Reject, Ignore)


class _Family:
    """The four metrics of one prefix and label set."""

    def __init__(self, prefix: str, labels: tuple[str, ...]) -> None:
        names = ("task_name", *labels)
        self.started = TaskCounter(f"{prefix}_started_total", "Monitored tasks started.", names)
        self.completed = TaskCounter(f"{prefix}_completed_total",
                                     "Monitored tasks completed successfully.", names)
        self.failed = TaskCounter(f"{prefix}_failed_total", "Monitored tasks failed.",
                                  ("task_name", "error_type", *labels))
        self.duration = TaskHistogram(f"{prefix}_duration_seconds",
                                      "Run time of monitored tasks.", names)


@functools.lru_cache(maxsize=64)
def _family(prefix: str, labels: tuple[str, ...]) -> _Family:
    return _Family(prefix, labels)


class LabelExtractionError(Exception):
    """A monitored task's label could not be extracted from a call's arguments."""


#: The FaultLog component under which label extraction faults are counted.
COMPONENT = "monitored task labels"


class _Extractor:
    """Pulls label values out of a call's arguments; reports each label it cannot extract."""

    def __init__(self, fun: Callable[..., Any], sources: Mapping[str, LabelSource],
                 task_name: str,
                 report: Callable[[str, BaseException], None] = report_fault) -> None:
        self.names = tuple(sources)
        self._sources = dict(sources)
        self._task_name = task_name
        self._report = report
        try:
            self._signature: inspect.Signature | None = inspect.signature(fun)
        except (TypeError, ValueError):
            self._signature = None

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults included where it can tell."""
        named: dict[str, Any] = dict(kwargs)
        if self._signature is None:
            return named
        try:
            bound = self._signature.bind_partial(*args, **kwargs)
        except TypeError:  # arguments the function refuses: the task fails with this error
            return named
        bound.apply_defaults()
        named.update(bound.arguments)
        return named

    def values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...]:
        arguments: dict[str, Any] | None = None
        values = []
        for label, source in self._sources.items():
            try:
                if callable(source):
                    value = source(args, kwargs)
                else:
                    if arguments is None:
                        arguments = self._arguments(args, kwargs)
                    if source not in arguments:
                        raise LabelExtractionError(
                            f"label {label!r} of monitored task {self._task_name!r} is the "
                            f"argument {source!r}, which this call did not pass")
                    value = arguments[source]
                values.append("" if value is None else str(value))
            except Exception as exc:  # noqa: BLE001 - a label must not fail the task
                values.append("")
                self._report(COMPONENT, exc if isinstance(exc, LabelExtractionError)
                             else self._failed(label, exc))
        return tuple(values)

    def _failed(self, label: str, exc: Exception) -> LabelExtractionError:
        error = LabelExtractionError(f"label {label!r} of monitored task {self._task_name!r} "
                                     f"could not be computed: {type(exc).__name__}")
        error.__cause__ = exc  # the log shows the function's own traceback
        return error


def _run_monitored(task_name: str, family: _Family, labels: tuple[str, ...],
                   call: Callable[[], Any]) -> Any:
    family.started.labels(task_name, *labels).inc()
    started = time.perf_counter()
    try:
        result = call()
    except _PREDICATES:
        raise
    except Exception as exc:
        family.failed.labels(task_name, exception_name(exc), *labels).inc()
        raise
    finally:
        family.duration.labels(task_name, *labels).observe(time.perf_counter() - started)
    family.completed.labels(task_name, *labels).inc()
    return result


class MonitoredTask(Task):  # type: ignore[misc]  # celery's Task is untyped
    """Base class: every run records started/completed/failed/duration."""

    abstract = True
    monitor_prefix: str = DEFAULT_PREFIX
    monitor_labels: Mapping[str, LabelSource] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        extractor = self.__dict__.get("_monitor_extractor")
        if extractor is None:
            extractor = self._monitor_extractor = _Extractor(self.run, self.monitor_labels,
                                                             self.name)
        family = _family(self.monitor_prefix, extractor.names)
        return _run_monitored(self.name, family, extractor.values(args, kwargs),
                              lambda: super(MonitoredTask, self).__call__(*args, **kwargs))


def monitor_task(fun: F | None = None, *, labels: Mapping[str, LabelSource] | None = None,
                 prefix: str = DEFAULT_PREFIX, name: str | None = None) -> Any:
    """Decorate a task function (below ``@app.task``) to record the four metrics.

    ``name`` defaults to ``module.function``, Celery's default task name.
    """

    def decorate(function: F) -> F:
        task_name = name or f"{function.__module__}.{function.__name__}"
        extractor = _Extractor(function, labels or {}, task_name)
        family = _family(prefix, extractor.names)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return _run_monitored(task_name, family, extractor.values(args, kwargs),
                                  lambda: function(*args, **kwargs))

        return wrapper  # type: ignore[return-value]

    return decorate(fun) if fun is not None else decorate
