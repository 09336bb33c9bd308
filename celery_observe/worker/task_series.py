"""The series of one task name, kept compact: one array of floats under one lock.

prometheus_client keeps each value in an object with a lock of its own, so a histogram
of 20 buckets is 22 objects; a worker held 12.9 KB per task name that way. Here all of a
task name's values are one array of floats: a head (created, active, timeouts, last
success, the five status counters), then a block per histogram or labelled counter, in
the order each first got a value. ``blocks`` names them, one character each (``0`` to
``4`` the duration of ``STATUSES[i]``, ``w`` the queue wait, ``e`` an error type, ``r`` a
retry reason; ``keys`` holds the class name of each ``e`` and ``r`` block, in order). One
lock per task name guards it: the recorder writes under it (the main thread, or pool
threads with the threads pool), and the exposition copies a :class:`Snapshot` under it
from the HTTP server's render thread. The values follow prometheus_client's arithmetic
(the same float additions in the same order), so the page says what it would say.
"""

from __future__ import annotations

import math
import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from ..shapes import STATUSES

#: The head of every task's array.
CREATED, ACTIVE, TIMEOUTS, LAST_SUCCESS, TOTALS = 0, 1, 2, 3, 4
HEAD = TOTALS + len(STATUSES)
#: The index of each status among the totals, and its block's character.
STATUS_INDEX: dict[str, int] = {status: index for index, status in enumerate(STATUSES)}
DURATION_BLOCKS = "01234"
WAIT, ERROR, RETRY = "w", "e", "r"
#: A counter block: its value, then its creation time.
COUNTER_SIZE = 2
#: ``blocks`` strings whose histogram starts are remembered (some 0.5 KB each, so at
#: most 128 KB); past that, a string's starts are found on every call.
MAX_SHAPES = 256


class Layout:
    """A histogram block: one count per bucket (not cumulative: an observation adds to
    one slot; the exposition accumulates), the last bucket ``+Inf``, then the sum of the
    observed values, then the creation time; positions relative to the block's start."""

    __slots__ = ("bounds", "created", "size", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(bound) for bound in bounds)
        if list(self.bounds) != sorted(set(self.bounds)) or not all(
                math.isfinite(bound) for bound in self.bounds):
            raise ValueError(f"histogram bounds must be finite and increasing, not {bounds!r}")
        self.sum = len(self.bounds) + 1
        self.created = self.sum + 1
        self.size = self.created + 1

    def observe(self, values: array[float], start: int, value: float) -> None:
        """As ``Histogram.observe``: a value on a bound falls in that bound's bucket."""
        values[start + self.sum] += value
        values[start + bisect_left(self.bounds, value)] += 1.0


class Block(NamedTuple):
    """One block of a task's array: its kind (a character of ``blocks``), its class name
    (error and retry counters), and where it starts."""

    kind: str
    key: str | None
    start: int


class Children(NamedTuple):
    """Where each label set of a snapshot starts, by family, in block order."""

    durations: list[tuple[str, int]]  # (status, start)
    waits: list[int]
    errors: list[tuple[str, int]]  # (class name, start of its value, then its creation time)
    retries: list[tuple[str, int]]


class Snapshot(NamedTuple):
    """A consistent copy of one task's values, taken under its lock."""

    version: int
    values: array[float]
    blocks: str
    keys: tuple[str, ...]


class TaskSeries:
    """Every per-task series of one task name.

    ``version`` grows with every change, under the lock, so the exposition can keep this
    task's rendered lines until the next change. Every status counter and the timeouts
    counter exist from the start (``rate()`` then sees each first outcome), created at
    ``created``; the last success is NaN until the first success.
    """

    __slots__ = ("blocks", "keys", "lock", "name", "values", "version")

    def __init__(self, name: str, created: float) -> None:
        self.name = name
        self.version = 0
        self.lock = threading.Lock()
        self.values = array("d", [0.0]) * HEAD
        self.values[CREATED] = created
        self.values[LAST_SUCCESS] = math.nan
        self.blocks = ""
        self.keys: tuple[str, ...] = ()

    def snapshot(self) -> Snapshot:
        with self.lock:
            return Snapshot(self.version, self.values[:], self.blocks, self.keys)


class Blocks:
    """Finds and adds the blocks of tasks' arrays, for one worker's histogram layouts."""

    def __init__(self, duration: Layout, wait: Layout) -> None:
        self.duration = duration
        self.wait = wait
        # Where each histogram block starts, by ``blocks`` string: most tasks of a worker
        # share a few (``0``, ``w0``), so a task's hot path finds its block in two dict
        # lookups, not by reading the string. A string costs its entry whatever its task.
        self._histogram_starts: dict[str, dict[str, int]] = {}

    def histogram(self, series: TaskSeries, kind: str, created: float) -> int:
        """The start of ``series``' histogram block ``kind``, added if new (under its lock)."""
        blocks = series.blocks
        starts = self._histogram_starts.get(blocks)
        if starts is None:
            starts = {block: start for block, start in self._positions(blocks)
                      if block not in (ERROR, RETRY)}
            if len(self._histogram_starts) < MAX_SHAPES:
                self._histogram_starts[blocks] = starts
        start = starts.get(kind)
        if start is not None:
            return start
        layout = self.wait if kind == WAIT else self.duration
        return self._add(series, kind, layout.size, layout.created, created)

    def counter(self, series: TaskSeries, kind: str, key: str, created: float | None) -> int:
        """The start of ``series``' counter block (``kind``, ``key``), -1 if there is none
        and ``created`` is None; else added (under its lock)."""
        keys = iter(series.keys)
        for block, start in self._positions(series.blocks):
            if block in (ERROR, RETRY) and next(keys) == key and block == kind:
                return start
        if created is None:
            return -1
        series.keys = (*series.keys, key)
        return self._add(series, kind, COUNTER_SIZE, 1, created)

    @staticmethod
    def _add(series: TaskSeries, kind: str, size: int, created_at: int, created: float) -> int:
        start = len(series.values)
        block = array("d", [0.0]) * size
        block[created_at] = created
        series.values = series.values + block  # a new array of that size: extend() over-allocates
        series.blocks += kind
        return start

    def children(self, snap: Snapshot) -> Children:
        """Each block of a snapshot as the label set it is: the one reading of ``blocks``
        that the page and ``collect()`` share."""
        durations: list[tuple[str, int]] = []
        waits: list[int] = []
        counters: dict[str, list[tuple[str, int]]] = {ERROR: [], RETRY: []}
        for block in self.each(snap):
            if block.key is not None:
                counters[block.kind].append((block.key, block.start))
            elif block.kind == WAIT:
                waits.append(block.start)
            else:
                durations.append((STATUSES[int(block.kind)], block.start))
        return Children(durations, waits, counters[ERROR], counters[RETRY])

    def each(self, snap: Snapshot) -> Iterator[Block]:
        """Every block of a snapshot, in order."""
        keys = iter(snap.keys)
        for kind, start in self._positions(snap.blocks):
            yield Block(kind, next(keys) if kind in (ERROR, RETRY) else None, start)

    def _positions(self, blocks: str) -> Iterator[tuple[str, int]]:
        """Each block of a ``blocks`` string with where it starts: after the head and
        every block before it."""
        start = HEAD
        for kind in blocks:
            yield kind, start
            if kind in (ERROR, RETRY):
                start += COUNTER_SIZE
            else:
                start += (self.wait if kind == WAIT else self.duration).size
