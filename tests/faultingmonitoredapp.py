"""The test app plus monitored tasks whose labels cannot always be extracted."""

from __future__ import annotations

from typing import Any

from celery_observe import MonitoredTask, monitor_task
from tests.workerapp import app

__all__ = ["app"]


@app.task(base=MonitoredTask, monitor_labels={"customer_id": "customer_id"},
          monitor_prefix="faulting_refund")
def refund(amount: int, **details: Any) -> int:
    """Its label is an argument callers may leave out (then: one fault, label '')."""
    return amount


@app.task
@monitor_task(labels={"region": lambda args, kwargs: kwargs["address"]["region"]},
              prefix="faulting_deliver")
def deliver(address: dict[str, str]) -> str:
    """Its label function raises KeyError when the address is passed positionally."""
    return address["region"]
