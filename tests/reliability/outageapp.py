"""The app of the broker-outage tests: one task that leaves a trace of each execution.

``record`` appends its task id to a file, so a test counts what really ran without
asking celery-observe. Like a user's app it never imports celery_observe. The broker
comes from CELERY_OBSERVE_TEST_BROKER and the queue from CELERY_OBSERVE_TEST_QUEUE.
"""

from __future__ import annotations

import os
import time

from celery import Celery

BROKER = os.environ.get("CELERY_OBSERVE_TEST_BROKER", "memory://")
QUEUE = os.environ.get("CELERY_OBSERVE_TEST_QUEUE", "celery")

app = Celery("outageapp", broker=BROKER)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue=QUEUE,
    control_exchange=QUEUE,  # a remote-control exchange of the test's own
    worker_prefetch_multiplier=1,
)
if BROKER.startswith("redis"):
    # A message the worker had reserved when the connection dropped stays in Redis's
    # unacked hash until the visibility timeout; the default (1 h) would outlast the test.
    # Tasks here take 50 ms and are acknowledged when they start, so 5 s restores only
    # the messages the outage stranded; the sweeps run every second to see them soon.
    app.conf.broker_transport_options = {
        "visibility_timeout": 5, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}


@app.task
def record(path: str, seconds: float) -> str:
    """Sleep, then append this execution's task id to ``path`` (one write: atomic)."""
    time.sleep(seconds)
    task_id = record.request.id
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{task_id}\n".encode())
    finally:
        os.close(fd)
    return str(task_id)

