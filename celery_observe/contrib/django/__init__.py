"""Django: the monitoring seed's ``/api/celery/...`` endpoints and ``manage.py celery_health``.

Plain Django views (no DRF) over one long-lived :class:`~celery_observe.cluster.Cluster`, so
a Django project gets the cluster view without FastAPI. In settings.py::

    INSTALLED_APPS = [..., "celery_observe.contrib.django"]  # for `manage.py celery_health`
    CELERY_OBSERVE_API_TOKEN = os.environ.get("CELERY_OBSERVE_API_TOKEN")  # enables revoke

and in urls.py::

    from celery_observe.contrib.django import urls as celery_urls

    urlpatterns = [path("api/celery/", include(celery_urls()))]
"""

from __future__ import annotations

from .urls import urls

__all__ = ["urls"]
