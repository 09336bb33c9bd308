"""The Celery app every benchmark worker runs.

Like a user's app it never imports celery_observe: observation comes from ``--observe``.
The broker, the queue and the remote-control exchange come from the environment, so each
benchmark run talks over its own names and never reaches a developer's workers.

Per-task INFO log lines ("Received task", "succeeded in") are turned off: they would cost
more than anything measured here and would hide the difference between the variants.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import Celery, signals
from celery.exceptions import Reject
from celery.worker.control import inspect_command

from benchmarks.appenv import BROKER_ENV, NAMES_ENV, QUEUE_ENV, task_name

QUEUE = os.environ.get(QUEUE_ENV, "observe-bench")
#: How many distinct task names the app registers (figures 4 and 6 need up to 1,000).
NAME_COUNT = int(os.environ.get(NAMES_ENV, "1000"))

app = Celery("benchapp", broker=os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/14"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
    control_exchange=QUEUE,  # this run's own remote-control exchange
    task_ignore_result=True,
    worker_redirect_stdouts=False,
)


@app.task(name="bench.noop")
def noop() -> None:
    """The task whose drain rate figure 1 measures: no work at all."""


def _outcome(self: Any, mode: str = "ok") -> str:
    """One body for every generated name: succeed, fail, retry once or reject."""
    if mode == "fail":
        raise ValueError("benchmark failure")
    if mode == "retry" and self.request.retries == 0:
        raise self.retry(exc=KeyError("benchmark retry"), countdown=0)
    if mode == "reject":
        raise Reject("benchmark reject", requeue=False)
    return mode


for _index in range(NAME_COUNT):
    app.task(name=task_name(_index), bind=True, max_retries=1)(_outcome)


@signals.after_setup_logger.connect
def _quiet_per_task_logging(**_: Any) -> None:
    for name in ("celery.app.trace", "celery.worker.strategy", "celery.worker.request"):
        logging.getLogger(name).setLevel(logging.WARNING)


@inspect_command(name="bench_status_timing", args=[("samples", int)],
                 signature="[samples=200]")
def bench_status_timing(state: Any, samples: int = 200) -> dict[str, Any]:
    """Times, inside the worker, the status cache's hit and a fresh status (figure 5).

    Measured here rather than through a broadcast, whose broker round trip is larger
    than the hit itself.
    """
    consumer = getattr(state, "consumer", None)
    observer = getattr(getattr(consumer, "controller", None), "celery_observe", None)
    if observer is None:
        return {"error": "worker not observed"}
    cache = observer.caches.get("worker_status")
    hits: list[float] = []
    misses: list[float] = []
    for _ in range(int(samples)):
        cache.invalidate("status")
        started = time.perf_counter()
        cache.get_or_compute("status", observer.status)
        misses.append(time.perf_counter() - started)
        started = time.perf_counter()
        _value, hit = cache.get_or_compute("status", observer.status)
        hits.append(time.perf_counter() - started)
        if not hit:
            return {"error": "the second lookup missed; cannot time a hit"}
    return {"hit_seconds": hits, "miss_seconds": misses}
