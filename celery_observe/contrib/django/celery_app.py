"""Which Celery app the views and the command observe: the one given, else the project's.

The usual ``proj/celery.py`` creates the app and ``proj/__init__.py`` imports it, so once
Django has loaded the settings the project's app is Celery's current app. Without one,
Celery would hand out its fallback app (``amqp://guest@localhost``), and every answer
would be about a broker the project does not use: that is refused instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from celery import Celery


def project_app(app: Celery | None = None) -> Celery:
    """``app``, or the project's Celery app; ImproperlyConfigured when there is none."""
    if app is not None:
        return app
    from celery import _state, current_app

    found: Celery = current_app._get_current_object()
    if found is _state.default_app and found.main == "default":
        raise ImproperlyConfigured(
            "celery-observe found no Celery app: create one in proj/celery.py "
            "(app = Celery('proj'); app.config_from_object('django.conf:settings', "
            "namespace='CELERY')) and import it in proj/__init__.py, or pass it: "
            "celery_observe.contrib.django.urls(celery_app=app)")
    return found
