"""What Celery's ``celery.commands`` entry point loads, on every ``celery`` command.

It gives ``celery`` the ``observe`` command group (:mod:`.cluster.cli`) and ``celery worker``
the ``--observe*`` options (:mod:`.worker.options`), and registers the ``observe_*``
remote commands, so ``celery -A proj worker --observe`` needs no code in ``proj``.
"""

from __future__ import annotations

from .cluster.cli import observe
from .worker.options import register_worker_options

__all__ = ["observe"]

register_worker_options()
