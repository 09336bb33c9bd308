"""Hooks every task's request lifecycle in the worker's main process.

``Task.Request`` is Celery's documented extension point for a custom request class. The
worker builds, per task, a subclass of that class (``create_request_cls``) and calls its
callbacks in the main process for every pool: ``on_accepted`` when a pool child or thread
starts the task, ``on_success`` with the result tuple, ``on_failure`` with the exception
(also for a child killed by a signal, ``os._exit`` or a hard time limit), ``on_timeout``
and, on revoke, ``_announce_revoked``. So outcomes counted here are exact without task
events, even for tasks whose child died and could report nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from billiard.exceptions import TimeLimitExceeded
from celery.utils.imports import symbol_by_name

from ..faults import FaultLog
from ..task_side.publish import PUBLISHED_AT_HEADER
from .delivery import DeliveryQueues, consumed_queues
from .outcome import REVOKED, SUCCESS, Outcome, classify_failure
from .recorder import Recorder

if TYPE_CHECKING:
    from celery import Celery

    _RequestBase = Any
else:
    _RequestBase = object

_MISSING = object()


def _on_success(self: ObservedRequestMixin, failed__retval__runtime: Any, **kwargs: Any) -> Any:
    """``on_success`` of every observed request class.

    ``create_request_cls`` writes an ``on_success`` for each task that never calls super;
    each is kept as ``_observe_success`` and called from here: one function for every
    class, where a wrapper each cost 0.3 KB per registered task.
    """
    try:
        return self._observe_success(failed__retval__runtime, **kwargs)
    finally:
        if not failed__retval__runtime[0]:  # a failure went through on_failure
            self._observe_end(SUCCESS)


class ObservedRequestMixin(_RequestBase):
    """Reports the start and the end of each execution to a :class:`Recorder`, once.

    Every hook records before handing over to Celery, and a fault while recording is
    swallowed, so the task's own handling is never changed.
    """

    _observe_recorder: Recorder
    _observe_faults: FaultLog
    _observe_queues: DeliveryQueues
    _observe_base: type
    _observe_success: Callable[..., Any]
    _observe_started: float | None = None
    _observe_done: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        generated = cls.__dict__.get("on_success")
        if generated is not None and generated is not _on_success:
            cls._observe_success = generated
            cls.on_success = _on_success

    def _observe_end(self, outcome: Outcome) -> None:
        if self._observe_done:  # e.g. a hard time limit reaches on_timeout and on_failure
            return
        self._observe_done = True
        try:
            self._observe_recorder.finished(self.name, outcome, self._observe_started, self.id,
                                            self._observe_queues(self.delivery_info))
        except Exception as exc:  # noqa: BLE001
            self._observe_faults.report("recorder", exc)

    def on_accepted(self, pid: int, time_accepted: float) -> Any:
        if not self._observe_done:
            self._observe_started = time_accepted
            try:
                self._observe_recorder.started(
                    self.name, self.request_dict.get(PUBLISHED_AT_HEADER))
            except Exception as exc:  # noqa: BLE001
                self._observe_faults.report("recorder", exc)
        return super().on_accepted(pid, time_accepted)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        try:
            outcome = classify_failure(self, exc_info.exception)
        except Exception as exc:  # noqa: BLE001
            self._observe_faults.report("classify", exc)
        else:
            self._observe_end(outcome)
        return super().on_failure(exc_info, send_failed_event=send_failed_event,
                                  return_ok=return_ok)

    def on_timeout(self, soft: bool, timeout: float) -> Any:
        if not soft:  # a soft limit only warns the task; its outcome comes later
            try:
                outcome = classify_failure(self, TimeLimitExceeded(timeout))
            except Exception as exc:  # noqa: BLE001
                self._observe_faults.report("classify", exc)
            else:
                self._observe_end(outcome)
        return super().on_timeout(soft, timeout)

    def _announce_revoked(self, reason: str, terminated: bool, signum: Any, expired: bool) -> Any:
        self._observe_end(REVOKED)
        return super()._announce_revoked(reason, terminated, signum, expired)


class TaskInstrumentation:
    """Gives each task of an app an observed Request class, and takes it back on stop."""

    def __init__(self, app: Celery, recorder: Recorder, faults: FaultLog) -> None:
        self._app = app
        self._recorder = recorder
        self._faults = faults
        self._queues = DeliveryQueues(lambda: consumed_queues(app))
        self._classes: dict[type, type] = {}
        self._originals: dict[str, tuple[Any, Any]] = {}  # name -> (task, own Request or _MISSING)

    def request_class(self, base: type) -> type:
        """The observed subclass of ``base`` (one per base class)."""
        base = getattr(base, "_observe_base", base)  # left over from an earlier worker
        cls = self._classes.get(base)
        if cls is None:
            cls = self._classes[base] = type(
                f"Observed{base.__name__}",
                (ObservedRequestMixin, base),
                {"_observe_recorder": self._recorder, "_observe_faults": self._faults,
                 "_observe_queues": self._queues,
                 "_observe_base": base, "__module__": __name__},
            )
        return cls

    def apply(self) -> int:
        """Instrument tasks not instrumented yet; returns how many were new."""
        new = 0
        for name, task in list(self._app.tasks.items()):
            known = self._originals.get(name)
            if known is not None and known[0] is task:
                continue
            own = vars(task).get("Request", _MISSING)
            task.Request = self.request_class(symbol_by_name(task.Request))
            self._originals[name] = (task, own)
            new += 1
        return new

    def restore(self) -> None:
        """Give every instrumented task its own Request class back."""
        for task, own in self._originals.values():
            if own is _MISSING:
                vars(task).pop("Request", None)
            else:
                task.Request = own
        self._originals.clear()
