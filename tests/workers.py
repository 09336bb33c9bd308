"""What tests add to celery_observe.testing: their apps' defaults and the repository root."""

from __future__ import annotations

import re
from pathlib import Path

from celery_observe.testing import ObservedWorker

REPO = Path(__file__).resolve().parent.parent
#: The worker's own line about its server (for a test that waits on that line itself).
SERVING = re.compile(r"celery-observe: serving .* on (?P<address>\S+):(?P<port>\d+)")
#: What the test apps (tests/workerapp.py and its siblings) read their broker and queue from.
BROKER_ENV = "CELERY_OBSERVE_TEST_BROKER"
QUEUE_ENV = "CELERY_OBSERVE_TEST_QUEUE"
#: The file that lets tests/heldstartapp.py's worker finish starting.
RELEASE_ENV = "CELERY_OBSERVE_TEST_RELEASE_FILE"


class WorkerProcess(ObservedWorker):
    """``celery -A tests.workerapp worker --observe`` (or another test app) in a subprocess,
    run from the repository, named ``<name or queue>@localhost``."""

    def __init__(self, broker: str, queue: str, pool: str = "prefork", concurrency: int = 2,
                 extra_args: tuple[str, ...] = (), port: int = 0,
                 env: dict[str, str] | None = None, name: str | None = None,
                 app: str = "tests.workerapp") -> None:
        super().__init__(app, broker, queue, pool=pool, concurrency=concurrency,
                         extra_args=extra_args, env=env, hostname=f"{name or queue}@localhost",
                         port=port, broker_env=BROKER_ENV, queue_env=QUEUE_ENV, cwd=REPO)
