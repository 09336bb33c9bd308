"""The seed's tasks (``dashboard.tasks.*``), with the outcomes a real system has.

Successes in milliseconds, slow ones (analysis, cleanup), a refused export (failure), a
notification gateway that times out on a first try and is retried with exponential
backoff, and a task routed to a queue no worker consumes. ``send_notification`` is a
``MonitoredTask`` labelled by customer (the monitoring seed's ``customer_id``).
"""

from __future__ import annotations

import time
from typing import Any

from celery_observe import MonitoredTask

from .app import RETRY_BACKOFF, app

EXPORT_FORMATS = ("json", "csv", "pdf")
#: The customer whose notifications time out on the first try (the load makes a few).
FLAKY_CUSTOMER = 7


@app.task(name="dashboard.tasks.refresh_dashboard_cache")
def refresh_dashboard_cache(user_id: int | None = None) -> str:
    time.sleep(0.005)
    return f"refreshed {'all users' if user_id is None else f'user {user_id}'}"


@app.task(name="dashboard.tasks.warm_dashboard_cache")
def warm_dashboard_cache(user_id: int | None = None) -> str:
    time.sleep(0.01)
    return "warmed"


@app.task(name="dashboard.tasks.performance_analysis")
def performance_analysis() -> dict[str, float]:
    time.sleep(0.5)  # the slow one: P95 shows it
    return {"p95_ms": 42.0}


@app.task(name="dashboard.tasks.export_dashboard_data")
def export_dashboard_data(user_id: int, export_format: str = "json",
                          date_range: dict[str, str] | None = None) -> str:
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"unsupported export format {export_format!r}")
    return f"export-{user_id}.{export_format}"


@app.task(name="dashboard.tasks.send_notification", bind=True, base=MonitoredTask,
          monitor_labels={"customer_id": "user_id"},
          autoretry_for=(ConnectionError,), max_retries=3,
          retry_backoff=RETRY_BACKOFF, retry_jitter=False)
def send_notification(self: Any, user_id: int, message: str,
                      notification_type: str = "info") -> str:
    if user_id == FLAKY_CUSTOMER and self.request.retries == 0:
        raise ConnectionError("notification gateway timed out")
    return f"sent {notification_type} to user {user_id}"


@app.task(name="dashboard.tasks.cleanup_old_data")
def cleanup_old_data(days_old: int = 30) -> int:
    time.sleep(0.2)
    return days_old


@app.task(name="dashboard.tasks.debug_task")
def debug_task() -> str:
    return "debug"


@app.task(name="dashboard.tasks.rebuild_search_index")
def rebuild_search_index() -> str:  # routed to a queue no worker consumes: never runs
    return "rebuilt"
