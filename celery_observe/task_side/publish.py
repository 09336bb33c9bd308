"""Producer side: stamp each task message with its publish time.

Celery messages carry no publish time, so the queue wait (publish to start) can only be
measured for messages whose producer adds one. Any process where celery_observe is
installed (``install(app)``, or a ``celery`` command, which loads the plugin) stamps the
header ``celery_observe_published_at`` in ``before_task_publish``; a worker measures
``celery_task_queue_wait_seconds`` for stamped messages and skips the others.
"""

from __future__ import annotations

import time
from typing import Any

from celery import signals

PUBLISHED_AT_HEADER = "celery_observe_published_at"


def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers[PUBLISHED_AT_HEADER] = time.time()


_DISPATCH_UID = "celery_observe.stamp_publish_time"


def stamp_publish_times(enabled: bool = True) -> None:
    """Stamp every task this process publishes from now on (``False``: stop stamping).

    Idempotent: calling it twice stamps once.
    """
    if enabled:
        signals.before_task_publish.connect(_stamp, weak=False, dispatch_uid=_DISPATCH_UID)
    else:
        signals.before_task_publish.disconnect(_stamp, dispatch_uid=_DISPATCH_UID)
