"""The ``--observe*`` options of ``celery worker``, for any app, with no code in it.

Celery imports our ``celery.commands`` entry point (:mod:`celery_observe.commands`) on every
``celery`` call, and that import runs :func:`register_worker_options`: it appends the options
to the worker command and, through ``celeryd_init``, adds the bootsteps to any worker
started with ``--observe`` (or ``observe_enabled``).
"""

from __future__ import annotations

from typing import Any

import click
from celery import signals

from ..config import SETTINGS, ObserveConfigError, Setting, resolve_config
from ..task_side.publish import stamp_publish_times
from .bootstep import ObserveConsumerStep, ObserveStep


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
