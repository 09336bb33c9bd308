"""How celery-observe enters a worker: two bootsteps, and ``install`` for workers from code.

``celery worker --observe`` adds these steps through :mod:`.options`; workers started
from code (``app.Worker()``, ``worker_main``, test workers) call :func:`install` instead.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

import click
from celery import bootsteps

from ..config import ObserveConfigError, resolve_config
from ..redaction import Masker
from ..task_side.publish import stamp_publish_times
from . import control  # noqa: F401 - registers the observe_* remote-control commands

if TYPE_CHECKING:
    from celery import Celery

    from ..task_side.metrics import ChildPipe
    from .observer import Observer

logger = logging.getLogger("celery_observe")
_OBSERVER_ATTRIBUTE = "celery_observe"  # where the worker keeps its Observer


class ObserveStep(bootsteps.StartStopStep):
    """Worker step: builds the :class:`Observer` and starts, stops and terminates it.

    It requires the pool, so it starts after the pool's processes were forked (they do not
    inherit the listening socket) and before the consumer starts taking tasks. ``create()``
    only opens the pipe task metrics come through from pool children, which must exist
    before they fork; the Observer, with prometheus_client and everything else it loads, is
    built in ``start()``, after the fork, so the children do not carry it (1.5 MB each).
    As in Celery's own steps, ``StartStopStep`` delegates ``stop`` and ``terminate`` (cold
    shutdown) to the object the step runs.
    """

    label = "celery-observe"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **options: Any) -> None:
        try:
            self.config = resolve_config(options, worker.app.conf)
        except ObserveConfigError as exc:
            if click.get_current_context(silent=True) is not None:
                # `celery worker`: a usage error (exit 2) with the message, no traceback.
                raise click.UsageError(str(exc)) from None
            raise
        self._pipe: ChildPipe | None = None
        super().__init__(worker, **options)

    def include_if(self, worker: Any) -> bool:
        return self.config.enabled

    def create(self, worker: Any) -> None:
        from ..task_side.metrics import ChildPipe

        self._pipe = ChildPipe()  # before the pool forks: every child inherits its write end

    def start(self, worker: Any) -> None:
        self.obj = self._observer(worker)
        if self.obj is not None:
            self.obj.start()

    def _observer(self, worker: Any) -> Observer | None:
        from .observer import Observer  # only workers that observe pay for its imports

        observer = None
        try:
            observer = Observer(worker.app, self.config)
            observer.task_code_metrics.open_pipe(self._pipe)
            observer.attach(worker)
        except Exception as exc:  # noqa: BLE001 - the worker runs on, unobserved
            detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            logger.error("celery-observe: could not set up observation of this worker; the "
                         "worker runs on without it. Please report this traceback.\n%s",
                         Masker.for_app(worker.app)(detail.rstrip()))  # a URL may be in it
            if observer is not None:
                observer.stop()  # gives the tasks their own request classes back
            if self._pipe is not None:
                self._pipe.close()
            return None
        setattr(worker, _OBSERVER_ATTRIBUTE, observer)
        return observer

    def info(self, worker: Any) -> dict[str, Any]:
        """Shown by ``celery inspect stats``."""
        port = self.obj.bound_port if self.obj is not None else None
        return {"celery_observe": {"address": self.config.address, "port": port}}


class ObserveConsumerStep(bootsteps.StartStopStep):
    """Consumer step: runs after the task strategies are built, on every (re)connect."""

    label = "celery-observe consumer"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, consumer: Any) -> None:
        observer = getattr(consumer.controller, _OBSERVER_ATTRIBUTE, None)
        if observer is not None:
            observer.consumer_started(consumer)


def install(app: Celery) -> None:
    """Observe every worker of ``app``, also those started from code.

    The same as running the worker with ``--observe``: it sets the default of
    ``app.conf.observe_enabled`` to True (an explicit ``observe_enabled = False`` still
    wins). In a producer (a web app), it stamps each published task with its publish time,
    which lets workers measure the queue wait. Calling it twice does nothing more.
    """
    app.steps["worker"].add(ObserveStep)
    app.steps["consumer"].add(ObserveConsumerStep)
    app.add_defaults({"observe_enabled": True})
    stamp_publish_times()
