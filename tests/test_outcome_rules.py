"""README's "What is counted as what", row by row, through classify_failure: no broker, no worker.

Each request is a small fake with exactly the attributes ``classify_failure`` reads; each
exception is built the way the worker's main process receives it (often wrapped by billiard
for the trip from a pool child).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import (
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from celery.exceptions import Ignore, Reject, Retry
from celery.utils.serialization import UnpickleableExceptionWrapper

from celery_observe.error_types import exception_name
from celery_observe.worker.outcome import (
    CANCELLED,
    IGNORED,
    REJECTED,
    REVOKED,
    SUCCESS,
    Outcome,
    classify_failure,
    unwrap,
)


def request(*, revoked: bool = False, cancelled: bool = False, retries: int = 0,
            **task: Any) -> Any:
    """A request as classify_failure reads it; the task options default to Celery's."""
    options = {"acks_late": False, "acks_on_timeout": True, "reject_on_worker_lost": False,
               "retry_on_worker_lost": False, "max_retries": 3, **task}
    return SimpleNamespace(task=SimpleNamespace(**options),
                           _context=SimpleNamespace(retries=retries),
                           _already_revoked=revoked, _already_cancelled=cancelled)


def wrapped(exc: BaseException) -> ExceptionWithTraceback:
    """``exc`` as billiard carries it from a pool child to the main process."""
    return ExceptionWithTraceback(exc, "Traceback (most recent call last):\n  ...\n")


class UnpicklableError(Exception):
    """An exception the pool child could not pickle (it holds a lock, say)."""


def failure(error_type: str, timed_out: bool = False) -> Outcome:
    return Outcome("failure", error_type=error_type, timed_out=timed_out)


def retry(reason: str, timed_out: bool = False) -> Outcome:
    return Outcome("retry", retry_reason=reason, timed_out=timed_out)


ACKS_LATE_REJECT = {"acks_late": True, "reject_on_worker_lost": True}

ROWS = [
    # raised an exception -> failure of that class
    ("raised", request(), ValueError("bad"), failure("ValueError")),
    ("raised-wrapped", request(), wrapped(KeyError("k")), failure("KeyError")),
    ("raised-unpicklable", request(),
     UnpickleableExceptionWrapper.from_exception(UnpicklableError("x")),
     failure("UnpicklableError")),
    ("raised-with-acks-late", request(acks_late=True), ValueError(), failure("ValueError")),
    # self.retry(...) -> retry, reason the class of exc (Retry when none)
    ("retry-with-exc", request(), Retry(exc=ConnectionError("down")), retry("ConnectionError")),
    ("retry-with-exc-wrapped", request(), wrapped(Retry(exc=OSError())), retry("OSError")),
    ("retry-without-exc", request(), Retry(), retry("Retry")),
    # pool child died -> failure WorkerLostError
    ("child-died", request(), WorkerLostError("exited"), failure("WorkerLostError")),
    ("child-died-wrapped", request(), wrapped(WorkerLostError()), failure("WorkerLostError")),
    ("child-systemexit", request(), SystemExit(1), failure("WorkerLostError")),
    ("child-keyboardinterrupt", request(), KeyboardInterrupt(), failure("WorkerLostError")),
    ("child-died-reject-without-acks-late", request(reject_on_worker_lost=True),
     WorkerLostError(), failure("WorkerLostError")),
    # hard time limit -> failure, timed out
    ("hard-time-limit", request(), TimeLimitExceeded(5.0),
     failure("TimeLimitExceeded", timed_out=True)),
    ("hard-time-limit-acks-late-acks-on-timeout", request(acks_late=True, acks_on_timeout=True),
     TimeLimitExceeded(5.0), failure("TimeLimitExceeded", timed_out=True)),
    ("hard-time-limit-acks-on-timeout-off-no-acks-late", request(acks_on_timeout=False),
     TimeLimitExceeded(5.0), failure("TimeLimitExceeded", timed_out=True)),
    # soft time limit not caught -> failure, timed out (never requeued)
    ("soft-time-limit", request(), wrapped(SoftTimeLimitExceeded()),
     failure("SoftTimeLimitExceeded", timed_out=True)),
    ("soft-time-limit-acks-late-acks-on-timeout-off",
     request(acks_late=True, acks_on_timeout=False), SoftTimeLimitExceeded(),
     failure("SoftTimeLimitExceeded", timed_out=True)),
    # child died with acks_late + reject_on_worker_lost, or retry_on_worker_lost -> retry
    ("reject-on-worker-lost", request(**ACKS_LATE_REJECT), WorkerLostError(),
     retry("WorkerLostError")),
    ("reject-on-worker-lost-systemexit", request(**ACKS_LATE_REJECT), SystemExit(1),
     retry("WorkerLostError")),
    ("reject-on-worker-lost-retries-left", request(retries=2, **ACKS_LATE_REJECT),
     WorkerLostError(), retry("WorkerLostError")),
    ("reject-on-worker-lost-unlimited-retries",
     request(retries=99, max_retries=None, **ACKS_LATE_REJECT), WorkerLostError(),
     retry("WorkerLostError")),
    ("retry-on-worker-lost", request(retry_on_worker_lost=True), WorkerLostError(),
     retry("WorkerLostError")),
    ("retry-on-worker-lost-max-retries-exhausted", request(retries=3, retry_on_worker_lost=True),
     WorkerLostError(), failure("WorkerLostError")),
    ("retry-and-reject-on-worker-lost-max-retries-exhausted",
     request(retries=3, retry_on_worker_lost=True, **ACKS_LATE_REJECT), WorkerLostError(),
     failure("WorkerLostError")),
    # hard time limit with acks_late and acks_on_timeout=False -> retry (requeued), timed out
    ("hard-time-limit-acks-on-timeout-off", request(acks_late=True, acks_on_timeout=False),
     wrapped(TimeLimitExceeded(5.0)), retry("TimeLimitExceeded", timed_out=True)),
    # revoked with terminate=True while running -> revoked
    ("terminated", request(revoked=True), Terminated(15), REVOKED),
    ("terminated-wrapped", request(revoked=True), wrapped(Terminated(9)), REVOKED),
    ("terminated-not-yet-marked-revoked", request(), Terminated(15), REVOKED),
    ("revoked-systemexit", request(revoked=True), SystemExit(-15), REVOKED),
    ("revoked-keyboardinterrupt", request(revoked=True), KeyboardInterrupt(), REVOKED),
    # raise Reject(...) -> rejected
    ("reject", request(), Reject("no", requeue=False), REJECTED),
    ("reject-requeue", request(), wrapped(Reject("later", requeue=True)), REJECTED),
    # cancelled on broker connection loss -> retry, reason Cancelled
    ("cancelled", request(cancelled=True), Terminated(15), CANCELLED),
    ("cancelled-systemexit", request(cancelled=True), SystemExit(-15), CANCELLED),
    ("cancelled-keyboardinterrupt", request(cancelled=True), KeyboardInterrupt(), CANCELLED),
    # raise Ignore() (also self.replace(...)) -> not counted
    ("ignore", request(), Ignore(), IGNORED),
    ("ignore-wrapped", request(), wrapped(Ignore()), IGNORED),
]


@pytest.mark.parametrize(("req", "exc", "expected"), [row[1:] for row in ROWS],
                         ids=[row[0] for row in ROWS])
def test_row(req: Any, exc: BaseException, expected: Outcome) -> None:
    """Each ending the worker's main process sees is classified as README's table says."""
    assert classify_failure(req, exc) == expected


def test_reject_on_worker_lost_requeues_even_with_max_retries_exhausted() -> None:
    """acks_late + reject_on_worker_lost, retries == max_retries: Celery requeues, so retry."""
    req = request(retries=3, **ACKS_LATE_REJECT)
    assert classify_failure(req, WorkerLostError()) == retry("WorkerLostError")


@pytest.mark.parametrize(("constant", "expected"), [
    (SUCCESS, Outcome("success", error_type=None, retry_reason=None, timed_out=False)),
    (REVOKED, Outcome("revoked", error_type=None, retry_reason=None, timed_out=False)),
    (REJECTED, Outcome("rejected", error_type=None, retry_reason=None, timed_out=False)),
    (IGNORED, Outcome("ignored", error_type=None, retry_reason=None, timed_out=False)),
    (CANCELLED, Outcome("retry", error_type=None, retry_reason="Cancelled", timed_out=False)),
], ids=["returned", "revoked-before-it-ran", "rejected", "ignored", "cancelled"])
def test_constant_outcomes(constant: Outcome, expected: Outcome) -> None:
    """The rows that are not an exception have these exact outcome constants."""
    assert constant == expected


def test_outcome_is_frozen() -> None:
    """An Outcome cannot be changed after the fact (the constants are shared)."""
    with pytest.raises(AttributeError):
        SUCCESS.status = "failure"  # type: ignore[misc]


def test_unwrap_returns_the_carried_exception() -> None:
    """unwrap() takes the exception out of billiard's ExceptionWithTraceback."""
    exc = ValueError("inner")
    assert unwrap(wrapped(exc)) is exc


def test_unwrap_leaves_a_plain_exception() -> None:
    """unwrap() returns an exception that was not wrapped as it is."""
    exc = KeyError("plain")
    assert unwrap(exc) is exc


@pytest.mark.parametrize(("exc", "name"), [
    (None, "Retry"),
    (ValueError(), "ValueError"),
    (UnpicklableError(), "UnpicklableError"),
    (UnpickleableExceptionWrapper("proj.errors", "GoneError", (), "GoneError()"), "GoneError"),
    (UnpickleableExceptionWrapper.from_exception(UnpicklableError()), "UnpicklableError"),
    (WorkerLostError(), "WorkerLostError"),
], ids=["none-is-retry", "builtin", "user-class", "unpicklable-by-name", "unpicklable-from-exc",
        "billiard"])
def test_exception_name(exc: BaseException | None, name: str) -> None:
    """exception_name() is the class name, the original one for an unpicklable exception."""
    assert exception_name(exc) == name


def test_exception_name_of_a_wrapper_is_the_wrappers_class() -> None:
    """exception_name() does not unwrap: classify_failure does that first."""
    assert exception_name(wrapped(ValueError())) == "ExceptionWithTraceback"

