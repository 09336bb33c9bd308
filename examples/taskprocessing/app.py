"""The task-processing seed's Celery app: its queues, routes, retries and beat schedule.

Run a worker of it yourself (``run.py`` next to this file starts two and sends them load)::

    celery -A examples.taskprocessing.app worker --observe -Q high_priority,cache_operations,default

The broker is the embedded one (files in ``TASKPROCESSING_DATA_DIR``, by default a folder in
the system's temp directory), or any other through Celery's own ``CELERY_BROKER_URL``
(``redis://127.0.0.1:6379/0``). The embedded broker is kombu's filesystem transport as
celery-observe's test harness writes it: the stock one can hand a worker a message file
before its writer has written it, which kills the worker under load.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from celery import Celery
from celery.schedules import crontab
from kombu import Queue

from celery_observe.testing.filesystem import SCHEME  # registers the embedded broker

DATA_DIR = Path(os.environ.get("TASKPROCESSING_DATA_DIR")
                or Path(tempfile.gettempdir()) / "celery-observe-taskprocessing")
FOLDERS = {name: DATA_DIR / name for name in ("queue", "processed", "control")}
for folder in FOLDERS.values():  # the filesystem transport needs its folders to exist
    folder.mkdir(parents=True, exist_ok=True)

#: The seed's queues, most urgent first.
QUEUES = ("high_priority", "cache_operations", "default", "analytics", "low_priority")
#: Where a task goes that no worker consumes (a queue name nobody deployed a worker for).
UNCONSUMED = "search_index"
#: Seconds before the first retry; each next one waits twice as long (the seed: 60).
RETRY_BACKOFF = int(os.environ.get("TASKPROCESSING_RETRY_BACKOFF") or 60)

app = Celery("taskprocessing", broker=f"{SCHEME}://localhost/",
             include=["examples.taskprocessing.tasks"])
app.conf.update(
    broker_transport_options={
        "data_folder_in": str(FOLDERS["queue"]), "data_folder_out": str(FOLDERS["queue"]),
        "processed_folder": str(FOLDERS["processed"]),
        "control_folder": str(FOLDERS["control"]), "polling_interval": 0.1,
    },
    broker_connection_retry_on_startup=True,
    accept_content=["json"], task_serializer="json", result_serializer="json", timezone="UTC",
    # The seed's worker settings.
    task_acks_late=True, worker_prefetch_multiplier=1, task_reject_on_worker_lost=True,
    task_default_queue="default",
    task_queues=[Queue(name) for name in QUEUES],
    task_routes={
        "dashboard.tasks.refresh_dashboard_cache": {"queue": "high_priority"},
        "dashboard.tasks.warm_dashboard_cache": {"queue": "cache_operations"},
        "dashboard.tasks.export_dashboard_data": {"queue": "low_priority"},
        "dashboard.tasks.performance_analysis": {"queue": "analytics"},
        "dashboard.tasks.send_notification": {"queue": "high_priority"},
        "dashboard.tasks.cleanup_old_data": {"queue": "low_priority"},
        "dashboard.tasks.rebuild_search_index": {"queue": UNCONSUMED},
    },
    beat_schedule={
        "refresh-dashboard-cache-hourly": {
            "task": "dashboard.tasks.refresh_dashboard_cache",
            "schedule": crontab(minute=0), "options": {"queue": "high_priority"}},
        "warm-dashboard-cache-daily": {
            "task": "dashboard.tasks.warm_dashboard_cache",
            "schedule": crontab(minute=0, hour=2), "options": {"queue": "cache_operations"}},
        "performance-analysis-every-6-hours": {
            "task": "dashboard.tasks.performance_analysis",
            "schedule": crontab(minute=0, hour="*/6"), "options": {"queue": "analytics"}},
    },
    beat_schedule_filename=str(DATA_DIR / "beat-schedule"),
    observe_buckets="fast",  # most of these tasks take milliseconds
)
