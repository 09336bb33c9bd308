"""The ``error_type`` and ``reason`` label values: an exception's class name.

Shared by the worker's outcome rules and by MonitoredTask in task code, so a failure is
named alike wherever it is counted.
"""

from __future__ import annotations

from celery.utils.serialization import UnpickleableExceptionWrapper


def exception_name(exc: BaseException | None) -> str:
    """The class name of ``exc``, also for exceptions that could not be pickled."""
    if exc is None:
        return "Retry"
    if isinstance(exc, UnpickleableExceptionWrapper):
        return str(exc.exc_cls_name)
    return type(exc).__name__
