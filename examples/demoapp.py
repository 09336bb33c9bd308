"""A small Celery app for the demo, on kombu's filesystem broker so no server is needed.

Run a worker of it yourself with::

    celery -A examples.demoapp worker --observe -c 2
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from celery import Celery
from celery.exceptions import Reject

# kombu's own filesystem transport lets a reader take a message file before it is written
# (a prefork worker died in 2 of 3 runs of 300 tasks here); this one writes files whole.
from celery_observe.testing.filesystem import SCHEME

DEMO_DIR = Path(__file__).resolve().parent.parent / ".observe-demo"
FOLDERS = {name: DEMO_DIR / name for name in ("queue", "processed", "control")}
for folder in FOLDERS.values():  # the filesystem transport needs its folders to exist
    folder.mkdir(parents=True, exist_ok=True)

app = Celery("demo", broker=f"{SCHEME}://")
app.conf.update(
    broker_transport_options={
        "data_folder_in": str(FOLDERS["queue"]),
        "data_folder_out": str(FOLDERS["queue"]),
        "processed_folder": str(FOLDERS["processed"]),
        "control_folder": str(FOLDERS["control"]),
        "polling_interval": 0.1,
    },
    broker_connection_retry_on_startup=True,
    observe_buckets="fast",  # demo tasks take milliseconds
)


@app.task
def resize_image(width: int, height: int) -> int:
    time.sleep(random.uniform(0.01, 0.2))
    return width * height


@app.task
def charge_card(amount: int) -> str:
    if amount < 0:
        raise ValueError(f"cannot charge a negative amount: {amount}")
    return "charged"


@app.task(bind=True, max_retries=2, default_retry_delay=0)
def call_flaky_api(self) -> str:  # type: ignore[no-untyped-def]
    if self.request.retries == 0:
        raise self.retry(exc=ConnectionError("upstream timed out"), countdown=0)
    return "ok"


@app.task
def import_row(row: dict[str, str]) -> None:
    if "id" not in row:
        raise Reject("row has no id", requeue=False)
