"""The ``celery observe`` command group, loaded by Celery through the ``celery.commands``
entry point on every ``celery`` invocation.

Being loaded on every call is also what lets ``celery -A proj worker --observe`` work with
no code in ``proj``: importing this module registers the worker options.
"""

from __future__ import annotations

import click

from .bootstep import register_worker_options


@click.group(name="observe")
def observe() -> None:
    """Look at the workers of an observed Celery cluster."""


register_worker_options()
