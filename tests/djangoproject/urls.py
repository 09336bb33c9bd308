"""The project's URLconf: the cluster endpoints under /api/celery/, as the seed has them."""

from __future__ import annotations

from django.urls import include, path

from celery_observe.contrib.django import urls as celery_urls

urlpatterns = [
    path("api/celery/", include(celery_urls(timeout=2, discovery_timeout=1))),
]
