"""The last finished tasks of a worker, in a ring buffer of fixed size, and their summary.

Appending is one deque append of a small tuple on the task's hot path; everything else
(dicts, percentiles) is computed only when someone asks.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

from ..shapes import FinishedTaskEntry, Percentiles, TaskSummary
from .metrics import STATUSES


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


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of already sorted values (None for no values)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class TaskHistory:
    """A bounded ring buffer of :class:`FinishedTask`."""

    def __init__(self, size: int) -> None:
        self._entries: deque[FinishedTask] = deque(maxlen=size)

    @property
    def size(self) -> int:
        return self._entries.maxlen or 0

    def append(self, entry: FinishedTask) -> None:
        self._entries.append(entry)

    def latest(self, limit: int) -> list[FinishedTask]:
        """Up to ``limit`` entries, newest first."""
        entries = list(self._entries)  # one C-level copy; safe while other threads append
        return entries[::-1][:limit]

    def summary(self) -> dict[str, TaskSummary]:
        """Per task name: counts by status, success rate and duration percentiles."""
        return summarize(list(self._entries))


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
