"""The test app with a consumer step that holds the worker's start until a file exists.

The step stands for one that waits on the broker after the connection and task consumer
are set up (Celery's heartbeat step retries its first event while the broker is away):
the worker is connected but not yet consuming, and must not be called ready. Only worker
processes import this module, since it adds the step to the shared test app.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar

from celery import bootsteps

from celery_observe.worker.observer import shutdown_requested
from tests.workerapp import app
from tests.workers import RELEASE_ENV

__all__ = ["app"]


class HoldStart(bootsteps.StartStopStep):
    """Waits up to 60 s for the file ``$CELERY_OBSERVE_TEST_RELEASE_FILE`` (or a shutdown),
    once the task consumer exists; it creates that path plus ``.held`` when it begins."""

    # after celery-observe's own consumer step, which hands it the consumer, as Celery's
    # heartbeat step comes after it
    requires: ClassVar[set[str]] = {"celery_observe.worker.bootstep:ObserveConsumerStep"}

    def start(self, parent: Any) -> None:
        release = Path(os.environ[RELEASE_ENV])
        release.with_name(release.name + ".held").touch()
        deadline = time.monotonic() + 60
        while not (release.exists() or shutdown_requested()) and time.monotonic() < deadline:
            time.sleep(0.05)


app.steps["consumer"].add(HoldStart)
