"""Faults inside celery-observe are logged once per component and never reach the worker.

Observation must not hurt what it observes: a bug or an unexpected state in a hook, the
HTTP server or the resource thread is swallowed, logged with its traceback the first time
it happens in that component, and counted in ``celery_observe_internal_errors_total``.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import Counter

logger = logging.getLogger("celery_observe")


class FaultLog:
    """Swallows faults: one log line per component, every fault counted."""

    def __init__(self, counter: Counter | None = None) -> None:
        self._counter = counter
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
                logger.error(
                    "celery-observe: %s failed and was skipped; the worker is unaffected. "
                    "Further faults of this component are counted in "
                    "celery_observe_internal_errors_total{component=%r} but not logged.",
                    component, component, exc_info=(type(exc), exc, exc.__traceback__),
                )
        except Exception:  # noqa: BLE001 - reporting a fault must not become one
            pass
