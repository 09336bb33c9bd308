"""What became of one execution of a task, decided from what the worker's main process sees.

Celery reports every ending of a request to the main process, but in different shapes:
a result tuple, an exception (often wrapped for the trip from a pool child), a time-out
callback or a revoke. This module turns each of those into one :class:`Outcome`, mirroring
the decisions ``celery.worker.request.Request.on_failure`` makes, so the count matches what
Celery did with the message (stored a failure, requeued it, dropped it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import (
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from celery.exceptions import Ignore, Reject, Retry

from ..error_types import exception_name


@dataclass(frozen=True)
class Outcome:
    """One ending of a task execution.

    ``status`` is a value of ``celery_task_total``'s status label, or ``"ignored"`` for a
    task that raised :class:`~celery.exceptions.Ignore` (``Task.replace`` does): such an
    ending frees the worker but is not a task outcome, so it is not counted.
    """

    status: str
    error_type: str | None = None
    retry_reason: str | None = None
    timed_out: bool = False


SUCCESS = Outcome("success")
REVOKED = Outcome("revoked")
REJECTED = Outcome("rejected")
IGNORED = Outcome("ignored")
#: A running task cancelled because the broker connection was lost; Celery marks it RETRY.
CANCELLED = Outcome("retry", retry_reason="Cancelled")


def unwrap(exc: BaseException) -> BaseException:
    """The exception a task raised, without the wrapper that carried it from the pool child."""
    return exc.exc if isinstance(exc, ExceptionWithTraceback) else exc


def _will_run_again(request: Any, exc: BaseException) -> bool:
    """Whether Celery requeues or re-sends the task after ``exc`` (see Request.on_failure)."""
    task = request.task
    worker_lost = isinstance(exc, WorkerLostError)
    # Celery weighs max_retries only for retry_on_worker_lost; reject_on_worker_lost alone
    # requeues a lost task however often it ran.
    retries_exhausted = False
    if worker_lost and task.retry_on_worker_lost:
        max_retries = task.max_retries
        retries_exhausted = max_retries is not None and request._context.retries >= max_retries
        if not retries_exhausted:
            return True
    if not task.acks_late:
        return False
    if worker_lost and task.reject_on_worker_lost and not retries_exhausted:
        return True
    return isinstance(exc, TimeLimitExceeded) and not task.acks_on_timeout


def classify_failure(request: Any, exc: BaseException) -> Outcome:
    """The outcome of a request whose execution ended with ``exc``.

    A task that Celery will run again (retry, or a message requeued after a lost pool
    child or a hard time limit with ``acks_late``) is a ``retry`` whose reason is the
    exception's class name; every other exception is a ``failure`` of that class.
    """
    exc = unwrap(exc)
    if isinstance(exc, Terminated):
        return CANCELLED if request._already_cancelled else REVOKED
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        if request._already_revoked:
            return REVOKED
        if request._already_cancelled:
            return CANCELLED
        exc = WorkerLostError("Worker exited prematurely")
    if isinstance(exc, Reject):
        return REJECTED
    if isinstance(exc, Ignore):
        return IGNORED
    if isinstance(exc, Retry):
        return Outcome("retry", retry_reason=exception_name(exc.exc))
    name = exception_name(exc)
    timed_out = isinstance(exc, (TimeLimitExceeded, SoftTimeLimitExceeded))
    if _will_run_again(request, exc):
        return Outcome("retry", retry_reason=name, timed_out=timed_out)
    return Outcome("failure", error_type=name, timed_out=timed_out)
