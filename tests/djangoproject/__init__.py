"""A small real Django project, for tests/test_django.py: settings, URLconf, Celery app.

As in every Django project that uses Celery, the package imports its Celery app, so that
the app exists (and is Celery's current app) whenever Django has loaded the settings.
"""

from __future__ import annotations

from .celery import app as celery_app

__all__ = ["celery_app"]
