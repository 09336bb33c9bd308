"""``/metrics``: the per-task families rendered from compact storage, and cached.

The per-task families (see :class:`~.metrics.PerTaskFamily`) are not prometheus_client
objects: the recorder keeps each task name's values in a few arrays
(:mod:`.task_series`). This module writes them as prometheus_client would, sample for
sample (``tests/test_exposition.py`` compares the page with real prometheus_client
metrics fed the same observations), and keeps each task name's lines as bytes until the
recorder changes that task; then only the histograms that gained an observation are
written again. With 500 task names and every status that is some 80,000 series, most
unchanged between two scrapes. The failure rate (``task_name`` too, but a value of the
clock) is written on every scrape; the rest of the registry (worker, pool, queues,
resources, task metrics of the user's tasks) is small and rendered by prometheus_client.

Both formats prometheus_client offers are produced: the text format 0.0.4 (where
``_created`` samples form a family of their own) and OpenMetrics 1.0.0.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Metric
from prometheus_client import metrics as client_metrics
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from ..faults import FaultLog
from ..shapes import STATUSES
from .metrics import FailureRate, PerTaskFamily, TaskMetrics
from .recorder import Recorder
from .task_series import (
    ACTIVE,
    CREATED,
    LAST_SUCCESS,
    TIMEOUTS,
    TOTALS,
    Layout,
    Snapshot,
    TaskSeries,
)

#: Pieces of text: one per histogram label set, else one per family (or none).
Pieces = tuple[bytes, ...]
#: A counter's label sets: (the labels after task_name, value, creation time as text).
CounterChildren = Sequence[tuple[str, float, str]]
#: A histogram label set's text, kept while its count stays: (count, lines, created line).
Written = tuple[float, bytes, bytes]
#: Each histogram label set's text, by (family, the labels after task_name).
WrittenSets = dict[tuple[str, str], Written]

_STATUS_LABELS = tuple(f',status="{status}"' for status in STATUSES)
_FAILURE_RATE = "celery_task_failure_rate"


def _value(value: float) -> str:
    """A sample value as ``floatToGoString`` writes it (``1.0``, ``+Inf``, ``1.7e+09``):
    its steps inlined for finite values, which every sample here is, at a third of the cost."""
    if -math.inf < value < 1e6:
        return repr(value)
    if 1e6 <= value < math.inf:
        text = repr(value)
        dot = text.find(".")
        if dot > 6:  # Go writes an exponent where Python still writes digits
            mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
            return f"{mantissa}e+{dot - 1:02d}"
        return text
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if openmetrics else text


def _headers(family: PerTaskFamily, openmetrics: bool) -> tuple[bytes, bytes]:
    """The HELP and TYPE lines of the family, and of its ``_created`` family (text)."""
    name, kind = family.name, family.kind
    doc = _escape_help(family.documentation, openmetrics)
    if openmetrics:
        return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n".encode(), b""
    shown = f"{name}_total" if kind == "counter" else name
    created = (f"# HELP {name}_created {doc}\n# TYPE {name}_created gauge\n"
               if kind != "gauge" else "")
    return f"# HELP {shown} {doc}\n# TYPE {shown} {kind}\n".encode(), created.encode()


class Rendered(NamedTuple):
    """One task's text in one format, as of ``version`` of its series."""

    version: int
    labels: str  # its task_name label, escaped
    lines: tuple[Pieces, ...]  # by family
    created: tuple[Pieces, ...]  # by family: the text format's _created lines
    histograms: WrittenSets


def _counts(values: Sequence[float]) -> Iterator[str]:
    """Values as prometheus_client writes them; repr() where that is what it writes."""
    return map(repr if all(0 <= value < 1e6 for value in values) else _value, values)


class _TaskWriter:
    """Writes one task's lines of every per-task family in one format."""

    def __init__(self, metrics: TaskMetrics, openmetrics: bool) -> None:
        self._metrics = metrics
        self._openmetrics = openmetrics
        self._blocks = metrics.blocks
        # what follows a bucket's labels: its bound, the closing brace and the space
        self._les = {id(layout): tuple(f',le="{floatToGoString(bound)}"}} '  # type: ignore[no-untyped-call]
                                       for bound in (*layout.bounds, math.inf))
                     for layout in (metrics.duration_layout, metrics.wait_layout)}
        # the five status counters for str.format: {0} the task's label, then the values,
        # then the creation time (interleaved in OpenMetrics, a family of its own in text)
        name = metrics.task_total.name
        self._totals = "".join(
            f'{name}_total{{{{{{0}}{status}}}}} {{{index}}}\n'
            + (f'{name}_created{{{{{{0}}{status}}}}} {{{len(STATUSES) + 1}}}\n'
               if openmetrics else "")
            for index, status in enumerate(_STATUS_LABELS, start=1))
        self._totals_created = "".join(f'{name}_created{{{{{{0}}{status}}}}} {{1}}\n'
                                       for status in _STATUS_LABELS)

    def render(self, name: str, snap: Snapshot, before: Rendered | None) -> Rendered:
        """The task's text; histograms whose count did not move since ``before`` keep theirs."""
        labels = f'task_name="{_escape_label(name)}"' if before is None else before.labels
        created = client_metrics._use_created  # prometheus_client's switch for _created
        metrics = self._metrics
        values = snap.values
        task_created = _value(values[CREATED])  # of every status counter and the timeouts
        kept: WrittenSets = {} if before is None else before.histograms
        children = self._blocks.children(snap)

        def counted(label: str, keyed: list[tuple[str, int]]) -> CounterChildren:
            return [(f',{label}="{_escape_label(key)}"', values[start], _value(values[start + 1]))
                    for key, start in keyed]

        written: WrittenSets = {}
        parts = (
            self._status_counters(labels, created, values, task_created),
            self._histogram(metrics.task_duration.name, labels, created,
                            metrics.duration_layout, values, kept, written,
                            [(f',status="{status}"', start)
                             for status, start in children.durations]),
            self._gauge(metrics.active_tasks.name, labels, [values[ACTIVE]]),
            self._counter(metrics.task_errors.name, labels, created,
                          counted("error_type", children.errors)),
            self._counter(metrics.task_retries.name, labels, created,
                          counted("reason", children.retries)),
            self._counter(metrics.task_timeouts.name, labels, created,
                          [("", values[TIMEOUTS], task_created)]),
            self._histogram(metrics.queue_wait.name, labels, created, metrics.wait_layout,
                            values, kept, written, [("", start) for start in children.waits]),
            self._gauge(metrics.last_success.name, labels, [] if math.isnan(
                values[LAST_SUCCESS]) else [values[LAST_SUCCESS]]),
        )
        return Rendered(snap.version, labels, tuple(lines for lines, _ in parts),
                        tuple(made for _, made in parts), written)

    def _status_counters(self, labels: str, created: bool, values: Sequence[float],
                         stamp: str) -> tuple[Pieces, Pieces]:
        totals = values[TOTALS:TOTALS + len(STATUSES)]
        if self._openmetrics and not created:
            return (self._counter(self._metrics.task_total.name, labels, created, [
                (extra, value, stamp) for extra, value in
                zip(_STATUS_LABELS, totals, strict=True)])[0], ())
        lines = self._totals.format(labels, *_counts(totals), stamp)
        made = self._totals_created.format(labels, stamp) if created and not self._openmetrics \
            else ""
        return (lines.encode(),), (made.encode(),) if made else ()

    def _counter(self, name: str, labels: str, created: bool,
                 children: CounterChildren) -> tuple[Pieces, Pieces]:
        lines: list[str] = []
        made: list[str] = []
        into = lines if self._openmetrics else made
        for extra, value, stamp in children:
            label_set = f"{{{labels}{extra}}} "
            lines.append(f"{name}_total{label_set}{_value(value)}\n")
            if created:
                into.append(f"{name}_created{label_set}{stamp}\n")
        return _pieces(lines), _pieces(made)

    def _histogram(self, name: str, labels: str, created: bool, layout: Layout,
                   values: Sequence[float], kept: WrittenSets, written: WrittenSets,
                   children: Sequence[tuple[str, int]]) -> tuple[Pieces, Pieces]:
        """Each label set's lines, kept from ``kept`` (by family and labels: a new label
        set must not take another's place) while its count stays; ``written`` gets them.
        Its ``_created`` line never changes: once written, it is kept whatever comes."""
        buckets = layout.sum
        mine: list[Written] = []
        for extra, start in children:
            count = sum(values[start:start + buckets])
            before = kept.get((name, extra))
            if before is None or before[0] != count:  # an observation came: write it again
                stamp = before[2] if before is not None else self._stamp(
                    name, labels + extra, created, values[start + layout.created])
                before = (count, self._label_set(name, labels + extra, layout,
                                                 values[start:start + layout.created]), stamp)
            written[name, extra] = before
            mine.append(before)
        if self._openmetrics:  # the _created line closes each label set
            return tuple(piece for _, text, made in mine for piece in (text, made) if piece), ()
        return tuple(text for _, text, _ in mine), tuple(made for _, _, made in mine if made)

    def _label_set(self, name: str, labels: str, layout: Layout,
                   values: Sequence[float]) -> bytes:
        """The bucket, count and sum lines of one histogram label set."""
        buckets = layout.sum
        cumulative = list(accumulate(values[:buckets]))
        count = cumulative[-1]  # the largest: all are below 1e6 if it is
        shown = list(map(repr if count < 1e6 else _value, cumulative))
        head = f"{name}_bucket{{{labels}"
        lines = [f"{head}{le}{text}\n" for le, text in zip(self._les[id(layout)], shown,
                                                            strict=True)]
        label_set = f"{{{labels}}} "
        lines.append(f"{name}_count{label_set}{shown[-1]}\n"
                     f"{name}_sum{label_set}{_value(values[buckets])}\n")
        return "".join(lines).encode()

    @staticmethod
    def _stamp(name: str, labels: str, created: bool, value: float) -> bytes:
        """A histogram label set's ``_created`` line, if prometheus_client writes them."""
        return f"{name}_created{{{labels}}} {_value(value)}\n".encode() if created else b""

    @staticmethod
    def _gauge(name: str, labels: str, values: Iterable[float]) -> tuple[Pieces, Pieces]:
        return _pieces([f"{name}{{{labels}}} {_value(value)}\n" for value in values]), ()


def _pieces(lines: list[str]) -> Pieces:
    return ("".join(lines).encode(),) if lines else ()


def _families(metrics: TaskMetrics, snaps: Sequence[tuple[str, Snapshot]]) -> list[Metric]:
    """The per-task families as prometheus_client metrics, sample by sample."""
    families = [Metric(family.name, family.documentation, family.kind)
                for family in metrics.per_task]
    total, duration, active, errors, retries, timeouts, wait, last_success = families
    created = client_metrics._use_created

    def counter(family: Metric, labels: dict[str, str], value: float, stamp: float) -> None:
        family.add_sample(f"{family.name}_total", labels, value)
        if created:
            family.add_sample(f"{family.name}_created", labels, stamp)

    def histogram(family: Metric, layout: Layout, labels: dict[str, str],
                  values: Sequence[float]) -> None:
        cumulative = list(accumulate(values[:layout.sum]))
        for bound, count in zip((*layout.bounds, math.inf), cumulative, strict=True):
            family.add_sample(f"{family.name}_bucket",
                              {**labels, "le": str(floatToGoString(bound))}, count)  # type: ignore[no-untyped-call]
        family.add_sample(f"{family.name}_count", labels, cumulative[-1])
        family.add_sample(f"{family.name}_sum", labels, values[layout.sum])
        if created:
            family.add_sample(f"{family.name}_created", labels, values[layout.created])

    blocks = metrics.blocks
    for name, snap in snaps:
        task = {"task_name": name}
        values = snap.values
        for status, value in zip(STATUSES, values[TOTALS:TOTALS + len(STATUSES)], strict=True):
            counter(total, {**task, "status": status}, value, values[CREATED])
        active.add_sample(active.name, task, values[ACTIVE])
        counter(timeouts, task, values[TIMEOUTS], values[CREATED])
        if not math.isnan(values[LAST_SUCCESS]):
            last_success.add_sample(last_success.name, task, values[LAST_SUCCESS])
        children = blocks.children(snap)
        for status, start in children.durations:
            histogram(duration, blocks.duration, {**task, "status": status},
                      values[start:start + blocks.duration.size])
        for family, label, keyed in ((errors, "error_type", children.errors),
                                     (retries, "reason", children.retries)):
            for key, start in keyed:
                counter(family, {**task, label: key}, values[start], values[start + 1])
        for start in children.waits:
            histogram(wait, blocks.wait, task, values[start:start + blocks.wait.size])
    return families


class Exposition:
    """Renders a worker's ``/metrics`` page: per-task families cached per task name.

    The failure rate is written here too (``metrics.failure_rate`` is not in
    ``registry``); a fault in it costs its family only, reported to ``faults``.
    """

    def __init__(self, recorder: Recorder, metrics: TaskMetrics, registry: CollectorRegistry,
                 faults: FaultLog | None = None) -> None:
        self._recorder = recorder
        self._registry = registry
        self._metrics = metrics
        self._failure_rate: FailureRate = metrics.failure_rate
        self._faults = faults if faults is not None else FaultLog(metrics.internal_errors)
        self._families = metrics.per_task
        self._writers = {openmetrics: _TaskWriter(metrics, openmetrics)
                         for openmetrics in (False, True)}
        self._headers = {openmetrics: [_headers(family, openmetrics)
                                       for family in self._families]
                         for openmetrics in (False, True)}
        self._failure_rate_header = {openmetrics: (
            f"# HELP {_FAILURE_RATE} {_escape_help(FailureRate.DOCUMENTATION, openmetrics)}\n"
            f"# TYPE {_FAILURE_RATE} gauge\n").encode() for openmetrics in (False, True)}
        # task name -> its text; one format at a time, as one Prometheus scrapes a worker
        # in one format.
        self._cache: dict[str, Rendered] = {}
        self._cached_format: bool | None = None
        self._assembled: list[bytes] = []  # the page's per-task pieces, while no task changes
        self._assembled_tasks = -1  # how many tasks they are of (-1: none assembled yet)
        self._rates: tuple[list[tuple[str, float]], bytes] = ([], b"")  # and the failure rates
        self._lock = threading.Lock()

    def render(self, openmetrics: bool) -> bytes:
        """The whole page in the text format, or in OpenMetrics."""
        rest = (generate_openmetrics if openmetrics else generate_text)(self._registry)
        parts = [*self._per_task(openmetrics), *self._failure_rates(openmetrics), rest]
        return b"".join(parts)  # one copy of a page of megabytes, not two

    def collect(self) -> Iterator[Metric]:
        """The per-task families and the failure rate as prometheus_client metrics, for
        ``generate_latest(observer)``; tests check them against the page."""
        yield from _families(self._metrics, [(series.name, series.snapshot())
                                             for series in self._recorder.all_series()])
        yield from self._failure_rate.collect()

    def _per_task(self, openmetrics: bool) -> list[bytes]:
        """The per-task families' pieces in page order, assembled again only if a task
        changed since the last render."""
        with self._lock:  # two scrapes at once would only render the same text twice
            if self._cached_format is not openmetrics:
                self._cache.clear()
                self._assembled_tasks = -1
                self._cached_format = openmetrics
            all_series = self._recorder.all_series()
            changed = len(all_series) != self._assembled_tasks
            texts = []
            for series in all_series:
                text = self._cache.get(series.name)
                if text is None or text.version != series.version:
                    text = self._render(series, openmetrics, text)
                    changed = True
                texts.append(text)
            if changed:
                self._assembled = self._assemble(texts, openmetrics)
                self._assembled_tasks = len(texts)
            return self._assembled

    def _assemble(self, texts: list[Rendered], openmetrics: bool) -> list[bytes]:
        """Each family's lines of every task, then (text format) its ``_created`` family."""
        parts: list[bytes] = []
        for index, (header, created_header) in enumerate(self._headers[openmetrics]):
            parts.append(header)
            for text in texts:
                parts += text.lines[index]
            created = [piece for text in texts for piece in text.created[index]]
            if created:
                parts.append(created_header)
                parts += created
        return parts

    def _render(self, series: TaskSeries, openmetrics: bool, before: Rendered | None) -> Rendered:
        snap = series.snapshot()  # a change after this copy moves the version on: re-rendered
        text = self._cache[series.name] = self._writers[openmetrics].render(
            series.name, snap, before)
        return text

    def _failure_rates(self, openmetrics: bool) -> list[bytes]:
        """``celery_task_failure_rate``, or nothing if reading it failed."""
        try:
            rates = self._failure_rate.rates()
            if rates != self._rates[0]:  # a failure, or a second passed: write them again
                self._rates = (rates, "".join([
                    f'{_FAILURE_RATE}{{task_name="{_escape_label(name)}"}} {_value(rate)}\n'
                    for name, rate in rates]).encode())
        except Exception as exc:  # noqa: BLE001 - the rest of the page is served
            self._faults.report("failure rate", exc)
            return []
        return [self._failure_rate_header[openmetrics], self._rates[1]]
