"""The Celery app of the secrets tests: password-protected broker and result backend.

Broker and backend come from CELERY_OBSERVE_TEST_BROKER and CELERY_OBSERVE_TEST_BACKEND;
this module never imports celery_observe, as a user's app would not.
"""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("secretsapp", broker=os.environ.get("CELERY_OBSERVE_TEST_BROKER", "memory://"),
             backend=os.environ.get("CELERY_OBSERVE_TEST_BACKEND") or None)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue=os.environ.get("CELERY_OBSERVE_TEST_QUEUE", "celery"),
    control_exchange=os.environ.get("CELERY_OBSERVE_TEST_QUEUE", "celery"),
    worker_prefetch_multiplier=1,
)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def boom() -> None:
    raise ValueError("boom")


@app.task
def hold(secret: str, seconds: float, note: str = "") -> str:
    """Runs for ``seconds`` holding secret-looking arguments; returns a digest, not them."""
    time.sleep(seconds)
    return f"held {len(secret) + len(note)} characters"
