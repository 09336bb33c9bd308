"""Faults inside celery-observe are logged once per component and never reach the worker.

Observation must not hurt what it observes: a bug or an unexpected state in a hook, the
HTTP server or the resource thread is swallowed, logged with its traceback the first time
it happens in that component, and counted in ``celery_observe_internal_errors_total``.
The traceback is logged as masked text (see :mod:`.redaction`): a broker library's
exception may quote the broker URL, password and all.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from typing import Protocol

from .redaction import mask_text

logger = logging.getLogger("celery_observe")


class _Increment(Protocol):
    def inc(self) -> None: ...


class FaultCounter(Protocol):
    """What counts faults: a labelled counter such as ``celery_observe_internal_errors``."""

    def labels(self, component: str) -> _Increment: ...


class FaultLog:
    """Swallows faults: one log line per component, every fault counted."""

    def __init__(self, counter: FaultCounter | None = None,
                 mask: Callable[[str], str] = mask_text) -> None:
        self._counter = counter
        self._mask = mask
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def report(self, component: str, exc: BaseException) -> None:
        """Record a fault of ``component``; never raises."""
        try:
            if self._counter is not None:
                self._counter.labels(component).inc()
            with self._lock:
                first = component not in self._logged
                self._logged.add(component)
            if first:
                detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                logger.error(
                    "celery-observe: %s failed and was skipped; the worker is unaffected. "
                    "Further faults of this component are counted in "
                    "celery_observe_internal_errors_total{component=%r} but not logged.\n%s",
                    component, component, self._mask(detail.rstrip()),
                )
        except Exception:  # noqa: BLE001 - reporting a fault must not become one
            pass
