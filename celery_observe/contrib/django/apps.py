"""The Django app, so that ``manage.py`` finds the ``celery_health`` command.

Labelled ``celery_observe``: the default label, the last part of the module path, would be
"django", which reads as Django itself in messages and migrations.
"""

from __future__ import annotations

from django.apps import AppConfig


class CeleryObserveConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "celery_observe.contrib.django"
    label = "celery_observe"
    verbose_name = "celery-observe"
