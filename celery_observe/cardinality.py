"""Bounds on label values that come from user data (task names, custom labels).

Every distinct label value is a new time series in Prometheus and a new object in the
worker. A bounded label admits its first ``max_values`` distinct values; later ones, and
values an allow/deny list rejects, are recorded under ``"other"`` so totals stay right. Only
admitted values are remembered, so memory stays flat however many distinct values arrive.
Callers count what they record under ``"other"`` in
``celery_observe_dropped_label_values_total{label}``.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Sequence

from .config import at_least

OVERFLOW = "other"


class BoundedLabel:
    """Maps values of one label to themselves, or to ``"other"`` past the cap."""

    def __init__(self, label: str, max_values: int, allow: Sequence[str] = (),
                 deny: Sequence[str] = ()) -> None:
        self.label = label
        self.max_values = at_least(f"BoundedLabel({label!r}): max_values", 1, max_values)
        self._allow = tuple(allow)
        self._deny = tuple(deny)
        self._admitted: set[str] = set()
        self._lock = threading.Lock()

    @property
    def admitted(self) -> int:
        """How many distinct values have a series of their own."""
        return len(self._admitted)

    def _wanted(self, value: str) -> bool:
        if self._allow and not any(fnmatch.fnmatchcase(value, p) for p in self._allow):
            return False
        return not any(fnmatch.fnmatchcase(value, p) for p in self._deny)

    def __call__(self, value: str) -> str:
        if value in self._admitted:  # the hot path: one set lookup
            return value
        with self._lock:
            if value in self._admitted:
                return value
            if len(self._admitted) < self.max_values and self._wanted(value):
                self._admitted.add(value)
                return value
        return OVERFLOW
