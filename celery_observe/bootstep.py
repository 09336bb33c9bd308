"""How celery-observe enters a worker: two bootsteps, the worker options and ``install``.

``celery -A proj worker --observe`` needs no code in ``proj``: Celery imports our
``celery.commands`` entry point on every ``celery`` call, and that import runs
:func:`register_worker_options`, which adds the ``--observe*`` options to the worker
command and, through ``celeryd_init``, the bootsteps to any worker started with
``--observe``. Workers started from code (``app.Worker()``, ``worker_main``) call
:func:`install` instead.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import click
from celery import bootsteps, signals

from . import control  # noqa: F401 - registers the observe_* remote-control commands
from .config import SETTINGS, ObserveConfigError, Setting, resolve_config
from .publish import stamp_publish_times

if TYPE_CHECKING:
    from celery import Celery

    from .observer import Observer

logger = logging.getLogger("celery_observe")
_OBSERVER_ATTRIBUTE = "celery_observe"


class ObserveStep(bootsteps.StartStopStep):
    """Worker step: builds the :class:`Observer` and runs its server.

    It requires the pool, so it starts after the pool's processes were forked (they do not
    inherit the listening socket) and before the consumer starts taking tasks.
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
        self.observer: Observer | None = None
        super().__init__(worker, **options)

    def include_if(self, worker: Any) -> bool:
        return self.config.enabled

    def create(self, worker: Any) -> None:
        from .observer import Observer  # only workers that observe pay for its imports

        observer = None
        try:
            observer = Observer(worker.app, self.config)
            observer.attach(worker)
        except Exception:
            logger.exception("celery-observe: could not set up observation of this worker; "
                             "the worker runs on without it. Please report this traceback.")
            if observer is not None:
                observer.stop()  # gives the tasks their own request classes back
            return
        self.observer = observer
        setattr(worker, _OBSERVER_ATTRIBUTE, observer)

    def start(self, worker: Any) -> None:
        if self.observer is not None:
            self.observer.start()

    def stop(self, worker: Any) -> None:
        if self.observer is not None:
            self.observer.stop()

    def terminate(self, worker: Any) -> None:
        """Cold shutdown (SIGQUIT) calls this instead of stop()."""
        self.stop(worker)

    def info(self, worker: Any) -> dict[str, Any]:
        """Shown by ``celery inspect stats``."""
        port = self.observer.bound_port if self.observer is not None else None
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


def _on_celeryd_init(sender: Any = None, instance: Any = None, conf: Any = None,
                     options: Any = None, **_: Any) -> None:
    try:
        enabled = resolve_config(options or {}, conf).enabled
    except ObserveConfigError:
        enabled = True  # let ObserveStep raise it where it stops the worker with the message
    if enabled and instance is not None:
        instance.app.steps["worker"].add(ObserveStep)
        instance.app.steps["consumer"].add(ObserveConsumerStep)


def _validate(setting: Setting) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return setting.parse(value)
        except ValueError as exc:
            raise click.BadParameter(f"{value!r}: {exc}.", ctx=ctx, param=param) from None
    return callback


def _worker_option(setting: Setting) -> click.Option:
    from celery.bin.base import CeleryOption

    flag_kwargs: dict[str, Any] = {"is_flag": True, "flag_value": True} if setting.is_flag else {}
    option: click.Option = CeleryOption(
        [setting.flag], default=None, help=setting.help, help_group="celery-observe Options",
        callback=_validate(setting), expose_value=True, **flag_kwargs)
    return option


def register_worker_options() -> None:
    """Add the ``--observe*`` options to ``celery worker``; safe to call more than once."""
    from celery.bin.worker import worker as worker_command

    present = {name for param in worker_command.params for name in getattr(param, "opts", ())}
    for setting in SETTINGS:
        if setting.flag not in present:
            worker_command.params.append(_worker_option(setting))
    signals.celeryd_init.connect(_on_celeryd_init, weak=False,
                                 dispatch_uid="celery_observe.celeryd_init")
    stamp_publish_times()  # tasks this process sends (retries, canvas) carry publish times
