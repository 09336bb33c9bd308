"""Settings of the test project; the broker and queue come from the test's environment.

CELERY_OBSERVE_TEST_BROKER and CELERY_OBSERVE_TEST_QUEUE are what tests/workerapp.py
reads, so this project talks to the test's workers over their remote-control exchange
(and to nobody else's); CELERY_OBSERVE_TEST_TOKEN, when set, turns on revoking.
"""

from __future__ import annotations

import os

_QUEUE = os.environ.get("CELERY_OBSERVE_TEST_QUEUE", "celery")

SECRET_KEY = "the-test-project-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
INSTALLED_APPS = ["celery_observe.contrib.django"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "tests.djangoproject.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

CELERY_BROKER_URL = os.environ.get("CELERY_OBSERVE_TEST_BROKER", "memory://")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = _QUEUE
CELERY_CONTROL_EXCHANGE = _QUEUE
#: The project's second queue, with a worker of its own: health reports it even when that
#: worker is gone, because the configuration names it.
CELERY_TASK_ROUTES = {"tests.workerapp.sleep": {"queue": f"{_QUEUE}-slow"}}

CELERY_OBSERVE_API_TOKEN = os.environ.get("CELERY_OBSERVE_TEST_TOKEN") or None
