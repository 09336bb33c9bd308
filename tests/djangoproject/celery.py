"""The project's Celery app, the usual ``proj/celery.py``: configured from settings.py.

It defines no tasks: the workers run tests/workerapp.py, and this app only sends, asks
and revokes, as a web process does.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.djangoproject.settings")

app = Celery("djangoproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
