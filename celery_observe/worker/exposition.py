"""``/metrics`` without rendering again what did not change since the last scrape.

prometheus_client renders every series on every scrape, at about 15 µs a series. With
500 task names and every outcome seen, the per-task families hold some 55,000 series, so
a scrape took over half a second of the worker's main-process CPU, though most series had
not changed since the scrape before. Here each task name's part of each per-task family
is kept as text, and rendered again only after the recorder changed that task's series.
The rest of the registry (worker, pool, queues, resources, task metrics of the user's
tasks) is small and is rendered by prometheus_client, in the same format.

Both formats prometheus_client offers are produced: the text format 0.0.4 (where
``_created`` samples form a family of their own) and OpenMetrics 1.0.0.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from .metrics import TaskMetrics
from .recorder import Recorder, TaskSeries

#: A series' children of one family: (its label pairs after task_name, the child).
Children = Callable[[TaskSeries], Iterable[tuple[tuple[tuple[str, str], ...], MetricWrapperBase]]]


def _go_float(value: float) -> str:
    """A sample value as prometheus_client writes it (``1.0``, ``+Inf``, ``1e-05``)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if openmetrics else text


@dataclass(frozen=True)
class _Family:
    """One per-task metric family and how to find its children in a task's series."""

    metric: MetricWrapperBase
    children: Children

    def header(self, openmetrics: bool) -> tuple[str, str]:
        """The HELP and TYPE lines of the family, and of its ``_created`` family (text)."""
        described: Metric = next(iter(self.metric.describe()))
        name, kind = described.name, described.type
        doc = _escape_help(described.documentation, openmetrics)
        if openmetrics:
            return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n", ""
        shown = f"{name}_total" if kind == "counter" else name
        created = (f"# HELP {name}_created {doc}\n# TYPE {name}_created gauge\n"
                   if kind in ("counter", "histogram") else "")
        return f"# HELP {shown} {doc}\n# TYPE {shown} {kind}\n", created

    def render(self, series: TaskSeries, openmetrics: bool) -> tuple[str, str]:
        """This task's lines of the family, and its ``_created`` lines (text format only)."""
        lines: list[str] = []
        created: list[str] = []
        task_label = f'task_name="{_escape_label(series.name)}"'
        for extra, child in self.children(series):
            labels = task_label + "".join(f',{key}="{_escape_label(value)}"'
                                          for key, value in extra)
            for family in child.collect():
                for sample in family.samples:
                    sample_labels = labels + "".join(
                        f',{key}="{_escape_label(value)}"' for key, value in sample.labels.items())
                    line = f"{sample.name}{{{sample_labels}}} {_go_float(sample.value)}\n"
                    if not openmetrics and sample.name.endswith("_created"):
                        created.append(line)
                    else:
                        lines.append(line)
        return "".join(lines), "".join(created)


def _by(label: str, children: Mapping[str, MetricWrapperBase]) -> list[
        tuple[tuple[tuple[str, str], ...], MetricWrapperBase]]:
    return [(((label, value),), child) for value, child in children.items()]


def _families(metrics: TaskMetrics) -> tuple[_Family, ...]:
    return (
        _Family(metrics.task_total, lambda s: _by("status", s.total)),
        _Family(metrics.task_duration, lambda s: _by("status", s.durations)),
        _Family(metrics.active_tasks, lambda s: [((), s.active)]),
        _Family(metrics.task_errors, lambda s: _by("error_type", s.errors_by_type)),
        _Family(metrics.task_retries, lambda s: _by("reason", s.retries_by_reason)),
        _Family(metrics.task_timeouts, lambda s: [((), s.timeouts)]),
        _Family(metrics.queue_wait, lambda s: [] if s.queue_wait_child is None
                else [((), s.queue_wait_child)]),
        _Family(metrics.last_success, lambda s: [] if s.last_success is None
                else [((), s.last_success)]),
    )


class Exposition:
    """Renders a worker's ``/metrics`` page: per-task families cached per task name."""

    def __init__(self, recorder: Recorder, metrics: TaskMetrics,
                 registry: CollectorRegistry) -> None:
        self._recorder = recorder
        self._registry = registry
        self._families = _families(metrics)
        # (format, family index, task name) -> (series version, lines, created lines);
        # one format at a time, as one Prometheus scrapes a worker in one format.
        self._cache: dict[tuple[bool, int, str], tuple[int, str, str]] = {}
        self._cached_format: bool | None = None
        self._lock = threading.Lock()

    def render(self, openmetrics: bool) -> bytes:
        """The whole page in the text format, or in OpenMetrics."""
        with self._lock:  # two scrapes at once would only render the same chunks twice
            return self._render(openmetrics)

    def _render(self, openmetrics: bool) -> bytes:
        if self._cached_format is not openmetrics:
            self._cache.clear()
            self._cached_format = openmetrics
        all_series = self._recorder.all_series()
        parts: list[str] = []
        for index, family in enumerate(self._families):
            header, created_header = family.header(openmetrics)
            lines, created = self._family_lines(index, family, all_series, openmetrics)
            parts += [header, *lines]
            if created:
                parts += [created_header, *created]
        rest = (generate_openmetrics if openmetrics else generate_text)(self._registry)
        return "".join(parts).encode() + rest

    def _family_lines(self, index: int, family: _Family, all_series: list[TaskSeries],
                      openmetrics: bool) -> tuple[list[str], list[str]]:
        lines, created = [], []
        for series in all_series:
            key = (openmetrics, index, series.name)
            version = series.version  # read before the values: a later change re-renders
            cached = self._cache.get(key)
            if cached is None or cached[0] != version:
                cached = self._cache[key] = (version, *family.render(series, openmetrics))
            if cached[1]:
                lines.append(cached[1])
            if cached[2]:
                created.append(cached[2])
        return lines, created
