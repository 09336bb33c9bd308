"""The cluster HTTP API: the seeds' endpoints over every observed worker, in a web app.

Runs in a client process (the user's FastAPI app, or ``celery -A proj observe serve``);
needs ``pip install 'celery-observe[api]'``. Mount it::

    from celery_observe.cluster.api import ApiSettings, observe_router

    app.include_router(observe_router(celery_app, ApiSettings(token=...)),
                       prefix="/api/v1/celery")
"""

from __future__ import annotations

from .app import create_app, observe_router
from .settings import ApiSettings

__all__ = ["ApiSettings", "create_app", "observe_router"]
