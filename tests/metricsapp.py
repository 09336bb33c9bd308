"""The test app plus tasks that record metrics of their own through celery_observe."""

from __future__ import annotations

from celery_observe import MonitoredTask, TaskCounter, TaskGauge, TaskHistogram, monitor_task
from tests.workerapp import app

__all__ = ["app"]


ITEMS = TaskCounter("test_items_processed_total", "Items processed by tests.", ["kind"])
BATCH = TaskHistogram("test_batch_size", "Batch sizes.", buckets=(1, 10, 100))
LAST = TaskGauge("test_last_batch_size", "Size of the last batch.")


@app.task
def record_items(kind: str, count: int) -> None:
    """Records custom metrics from inside the task (a pool child under prefork)."""
    for _ in range(count):
        ITEMS.labels(kind).inc()
    BATCH.observe(count)
    LAST.set(count)


@app.task(base=MonitoredTask, monitor_labels={"customer_id": "customer_id"})
def bill(customer_id: str, amount: int) -> int:
    if amount < 0:
        raise ValueError("negative amount")
    return amount


@app.task
@monitor_task(labels={"customer_id": lambda args, kwargs: kwargs["order"]["customer"]})
def ship(order: dict[str, str]) -> str:
    return order["customer"]
