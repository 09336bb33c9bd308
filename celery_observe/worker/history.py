"""The last finished tasks of a worker, in a ring buffer of fixed size, and their summary.

Appending is one deque append of a plain tuple on the task's hot path; everything else
(named entries, dicts, percentiles) is computed only when someone asks.
"""

from __future__ import annotations

import fnmatch
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import NamedTuple

from ..shapes import STATUSES, FinishedTaskEntry, Percentiles, TaskSummary

#: What :meth:`TaskHistory.append` takes: the fields of :class:`FinishedTask`, in order.
Entry = tuple[str | None, str, str, float | None, float, str | None]


class FinishedTask(NamedTuple):
    """One finished execution; times are unix seconds, ``started`` None if it never ran."""

    task_id: str | None
    name: str
    status: str
    started: float | None
    ended: float
    error_type: str | None

    @property
    def duration(self) -> float | None:
        return None if self.started is None else max(0.0, self.ended - self.started)

    def as_dict(self) -> FinishedTaskEntry:
        duration = self.duration
        return FinishedTaskEntry(
            id=self.task_id, name=self.name, state=self.status, started=self.started,
            ended=self.ended, error_type=self.error_type,
            duration_seconds=None if duration is None else round(duration, 6))


@dataclass(frozen=True)
class HistoryFilter:
    """Which finished tasks a history search wants; every given condition must hold.

    ``task`` is a task name, or a glob such as ``proj.billing.*``; ``since`` and ``until``
    are unix seconds of the task's end.
    """

    task: str | None = None
    state: str | None = None
    id_prefix: str | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, entry: FinishedTask) -> bool:
        if self.task is not None and not fnmatch.fnmatchcase(entry.name, self.task):
            return False
        if self.state is not None and entry.status != self.state:
            return False
        if self.id_prefix is not None and not (entry.task_id or "").startswith(self.id_prefix):
            return False
        if self.since is not None and entry.ended < self.since:
            return False
        return self.until is None or entry.ended <= self.until


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of already sorted values (None for no values)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class TaskHistory:
    """A bounded ring buffer of :class:`FinishedTask`."""

    def __init__(self, size: int) -> None:
        self._entries: deque[Entry] = deque(maxlen=size)
        # The deque's own append, and plain tuples in it: a FinishedTask built per outcome
        # (its __new__ is Python) and a wrapper method cost ~3,100 CPU instructions per
        # task on the worker's hot path (callgrind, Recorder.started + finished in a loop:
        # 37,734 -> 34,637). Named entries are built only for what a reader asks for.
        self.append: Callable[[Entry], None] = self._entries.append

    @property
    def size(self) -> int:
        return self._entries.maxlen or 0

    def latest(self, limit: int, where: HistoryFilter | None = None) -> list[FinishedTask]:
        """Up to ``limit`` entries, newest first; only those ``where`` matches, if given."""
        entries = list(self._entries)  # one C-level copy; safe while other threads append
        newest_first: Iterator[FinishedTask] = map(FinishedTask._make, reversed(entries))
        if where is not None:
            newest_first = filter(where.matches, newest_first)
        return list(islice(newest_first, limit))

    def summary(self) -> dict[str, TaskSummary]:
        """Per task name: counts by status, success rate and duration percentiles."""
        return summarize(map(FinishedTask._make, list(self._entries)))


def summarize(entries: Iterable[FinishedTask]) -> dict[str, TaskSummary]:
    counts: dict[str, dict[str, int]] = {}
    durations: dict[str, list[float]] = {}
    for entry in entries:
        if entry.status not in STATUSES:
            continue
        by_status = counts.setdefault(entry.name, dict.fromkeys(STATUSES, 0))
        by_status[entry.status] += 1
        duration = entry.duration
        if duration is not None:
            durations.setdefault(entry.name, []).append(duration)
    summary: dict[str, TaskSummary] = {}
    for name, by_status in sorted(counts.items()):
        finished = by_status["success"] + by_status["failure"]
        values = sorted(durations.get(name, []))
        summary[name] = TaskSummary(
            counts=by_status,
            success_rate_percent=(
                round(100.0 * by_status["success"] / finished, 2) if finished else None),
            duration_seconds=Percentiles(
                p50=percentile(values, 0.50), p95=percentile(values, 0.95),
                p99=percentile(values, 0.99)))
    return summary
