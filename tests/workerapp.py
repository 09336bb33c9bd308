"""The Celery app that test workers run: one task per outcome the tests pin down.

The broker comes from CELERY_OBSERVE_TEST_BROKER (and a result backend, if any, from
CELERY_OBSERVE_TEST_BACKEND); this module never imports celery_observe, as a user's app
would not.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery, signals
from celery.exceptions import Reject

app = Celery("workerapp", broker=os.environ.get("CELERY_OBSERVE_TEST_BROKER", "memory://"),
             backend=os.environ.get("CELERY_OBSERVE_TEST_BACKEND") or None)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue=os.environ.get("CELERY_OBSERVE_TEST_QUEUE", "celery"),
    # Each test's workers and clients talk over their own remote-control exchange, so a
    # broadcast never reaches a worker of another test (or a developer's own worker).
    control_exchange=os.environ.get("CELERY_OBSERVE_TEST_QUEUE", "celery"),
    worker_prefetch_multiplier=1,
)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def boom() -> None:
    raise ValueError("boom")


@app.task(bind=True, max_retries=3, default_retry_delay=0)
def flaky(self) -> str:  # type: ignore[no-untyped-def]
    if self.request.retries == 0:
        raise self.retry(exc=KeyError("first try"), countdown=0)
    return "second try"


@app.task
def exit_child() -> None:
    os._exit(1)


@app.task(time_limit=1)
def over_hard_limit() -> None:
    time.sleep(30)


@app.task(soft_time_limit=0.3)
def over_soft_limit() -> None:
    time.sleep(30)


@app.task
def sleep(seconds: float) -> None:
    time.sleep(seconds)


@app.task
def reject() -> None:
    raise Reject("not for me", requeue=False)


@app.task(acks_late=True, reject_on_worker_lost=True)
def exit_child_once(marker: str) -> str:
    """Kills its pool child the first time; the requeued message then succeeds."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died once")
        os._exit(1)
    return "survived"


@app.task
def block_main_loop() -> None:
    """Does nothing itself; receiving it blocks the worker's main loop (see below)."""


@signals.task_received.connect
def _block_the_main_loop(request: object = None, **_: object) -> None:
    """A receiver in the main process that hangs, as a deadlocked main loop would."""
    if getattr(request, "name", None) == "tests.workerapp.block_main_loop":
        time.sleep(4)


@app.task
def hold(secret: str, seconds: float, note: str = "") -> str:
    """Runs for ``seconds`` holding secret-looking arguments; returns a digest, not them."""
    time.sleep(seconds)
    return f"held {len(secret) + len(note)} characters"
