"""The test app in a worker whose celery-observe parts raise on every call.

CELERY_OBSERVE_TEST_FAULTS names the parts to break, comma separated (see ``PARTS``).
The faults are injected into celery-observe's own code at import, before the worker
builds anything; Celery itself is untouched.
"""

from __future__ import annotations

import os
from typing import Any

from celery_observe import cache_metrics, queues
from celery_observe.task_side import metrics as task_side_metrics
from celery_observe.worker import (
    instrument,
    metrics,
    observer,
    pool,
    recorder,
    resources,
    routes,
    task_metrics_receiver,
)
from tests.metricsapp import app

__all__ = ["app"]

# part -> the (owner, attribute) pairs whose calls raise
PARTS: dict[str, list[tuple[Any, str]]] = {
    "recorder": [(recorder.Recorder, "started"), (recorder.Recorder, "finished")],
    "classify": [(instrument, "classify_failure")],
    "resources": [(resources.ResourceMonitor, "_sample")],
    "queues": [(queues.QueueReader, "read_broker")],
    "collectors": [(pool.PoolCollector, "collect"), (cache_metrics.CacheCollector, "collect"),
                   (metrics.FailureRate, "rates")],
    "task metrics": [(task_metrics_receiver.TaskMetricsReceiver, "apply")],
    "task metrics (pool child)": [(task_side_metrics.PipeWriter, "_write")],
    "endpoints": [(routes, "metrics_response")] + [(observer.Observer, name) for name in (
        "status", "liveness", "readiness", "health", "tasks")],
    "setup": [(instrument.TaskInstrumentation, "apply")],
}


def _injected_fault(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("injected fault")


for part in filter(None, os.environ.get("CELERY_OBSERVE_TEST_FAULTS", "").split(",")):
    for owner, attribute in PARTS[part]:
        setattr(owner, attribute, _injected_fault)
