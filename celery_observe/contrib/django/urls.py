"""``urls()``: the endpoints of one ``Cluster``, as a ``(patterns, app_name)`` pair for include().

A function, not a module of urlpatterns, because the patterns need the Celery app, the token
and the client's timeouts, and each call owns one long-lived ``Cluster`` (thread-safe; its
caches are what keep a polled endpoint from broadcasting on every request).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe

from ...cluster.bodies import TASK_ID_PATTERN
from ...cluster.client import Cluster
from .celery_app import project_app
from .views import TOKEN_SETTING, ClusterViews

if TYPE_CHECKING:
    from celery import Celery

#: The URL namespace: ``reverse("celery_observe:health")``.
APP_NAME = "celery_observe"
MIN_TOKEN_LENGTH = 16


def _token(token: str | None) -> str | None:
    given_as = "urls(token=...)"
    if token is None:
        token, given_as = getattr(settings, TOKEN_SETTING, None), TOKEN_SETTING
    if token is not None and (not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH):
        raise ImproperlyConfigured(
            f"{given_as}: a token needs at least {MIN_TOKEN_LENGTH} characters; generate one "
            "with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token or None


def urls(celery_app: Celery | None = None, *, token: str | None = None, timeout: float = 1.0,
         discovery_timeout: float = 0.25, queue_threshold: int = 1000,
         queues: Iterable[str] = ()) -> tuple[list[Any], str]:
    """The cluster endpoints, for ``path("api/celery/", include(urls()))``.

    ``celery_app`` defaults to the project's app (Celery's current app once Django has
    loaded the settings). ``token`` (else the ``CELERY_OBSERVE_API_TOKEN`` setting) turns
    on ``POST tasks/<id>/revoke/``. ``timeout``, ``discovery_timeout``, ``queue_threshold``
    and ``queues`` are the ``Cluster``'s. Paths, each named for ``reverse()`` in the
    ``celery_observe`` namespace: ``health/``, ``status/``, ``tasks/``, ``stats/``,
    ``history/``, ``tasks/<task_id>/revoke/``.
    """
    app = project_app(celery_app)
    views = ClusterViews(app, Cluster(app, timeout=timeout, discovery_timeout=discovery_timeout,
                                      queue_threshold=queue_threshold, queues=queues),
                         _token(token))
    patterns = [
        path("health/", require_safe(views.health), name="health"),
        path("status/", require_safe(views.status), name="status"),
        path("tasks/", require_safe(views.tasks), name="tasks"),
        path("stats/", require_safe(views.stats), name="stats"),
        path("history/", require_safe(views.history), name="history"),
        re_path(rf"^tasks/(?P<task_id>{TASK_ID_PATTERN})/revoke/$",
                csrf_exempt(require_POST(views.revoke)), name="revoke"),
    ]
    return patterns, APP_NAME
