"""Answers requests read from stdin with ``django.test.Client``, one JSON line each.

Run as ``python -m tests.djangoproject.drive`` by tests/test_django.py: Django's settings,
app registry and Celery's current app stay in this process, away from the other tests in
the pytest process, while the test controls the workers between requests. A request is
``{"method": "GET", "path": "/api/celery/health/", "headers": {...}}`` and its answer
``{"status": 200, "json": {...}}``; ``{"reverse": "celery_observe:health"}`` answers
``{"url": "/api/celery/health/"}``. A view that raises answers ``{"exception": "..."}``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.djangoproject.settings")
    import django

    django.setup()
    from django.test import Client
    from django.urls import reverse

    # CSRF is enforced as for a browser: the POST endpoints must pass on their token alone.
    client = Client(enforce_csrf_checks=True)
    for line in sys.stdin:
        asked = json.loads(line)
        answer: dict[str, Any]
        try:
            if "reverse" in asked:
                answer = {"url": reverse(asked["reverse"], kwargs=asked.get("kwargs"))}
            else:
                response = client.generic(asked.get("method", "GET"), asked["path"],
                                          headers=asked.get("headers", {}))
                answer = {"status": response.status_code, "headers": dict(response.headers)}
                if response.get("Content-Type", "").startswith("application/json"):
                    answer["json"] = json.loads(response.content)
                else:
                    answer["text"] = response.content.decode(errors="replace")
        except Exception as exc:  # noqa: BLE001  # reported to the test, which fails on it
            answer = {"exception": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
