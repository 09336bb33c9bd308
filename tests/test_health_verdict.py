"""The cluster health verdict rule by rule, with no broker: healthy, degraded or unhealthy."""

from __future__ import annotations

from typing import Any

import pytest

from celery_observe.cluster.verdict import DEGRADED, HEALTHY, UNHEALTHY, cluster_health
from celery_observe.shapes import QueueReport

START = "celery -A proj worker --observe --loglevel=info"


def queue(length: int | None, consumers: tuple[str, ...] = ("w1@h",)) -> QueueReport:
    """A queue report as the client builds it."""
    return QueueReport(length=length, by_priority={}, oldest_message_age_seconds=None,
                       consumers=list(consumers),
                       unconsumed=bool(length) and not consumers)


def verdict(workers: dict[str, dict[str, Any]] | None = None, missing: tuple[str, ...] = (),
            queues: dict[str, QueueReport] | None = None,
            broker_error: str | None = None) -> dict[str, Any]:
    return cluster_health(
        workers={"w1@h": {"alive": True, "ready": True}} if workers is None else workers,
        missing=list(missing), queues={"celery": queue(0)} if queues is None else queues,
        broker_error=broker_error, queue_threshold=1000, start_command=START)


ROWS = [
    pytest.param({}, HEALTHY, "All systems operational", [], id="every worker up, queues short"),
    pytest.param({"broker_error": "ConnectionRefusedError: [Errno 111]"}, UNHEALTHY,
                 "the broker cannot be reached: ConnectionRefusedError: [Errno 111]",
                 ["Check that the broker (Redis/RabbitMQ) is running and reachable with the "
                  "app's broker_url"], id="broker unreachable"),
    pytest.param({"workers": {}}, UNHEALTHY, "No active Celery workers found",
                 [f"Start Celery workers: {START}"], id="no worker answers"),
    pytest.param({"queues": {"celery": queue(1001)}}, DEGRADED,
                 "queue 'celery' holds 1001 tasks (threshold 1000)",
                 ["Add workers consuming 'celery' or investigate slow tasks"],
                 id="queue over the threshold"),
    pytest.param({"queues": {"celery": queue(1000)}}, HEALTHY, "All systems operational", [],
                 id="queue at the threshold"),
    pytest.param({"queues": {"typo": queue(7, consumers=())}}, DEGRADED,
                 "queue 'typo' holds 7 tasks and no worker consumes it",
                 [f"Start a worker that consumes 'typo': {START} -Q typo"],
                 id="messages in a queue nobody consumes"),
    pytest.param({"queues": {"idle": queue(0, consumers=())}}, HEALTHY,
                 "All systems operational", [], id="empty queue nobody consumes"),
    pytest.param({"queues": {"celery": queue(None)}}, HEALTHY, "All systems operational", [],
                 id="depth unknown"),
    pytest.param({"missing": ("w2@h",)}, DEGRADED, "worker w2@h stopped answering",
                 ["Check the logs of w2@h; restart it if it is gone"], id="a worker went silent"),
    pytest.param({"workers": {"w1@h": {"alive": False, "liveness": {"reason": "no ticks"}}}},
                 DEGRADED, "worker w1@h is stuck: no ticks", ["Restart w1@h"],
                 id="a worker is stuck"),
    pytest.param({"workers": {"w1@h": {"alive": True, "ready": False,
                                       "readiness": {"reason": "reconnecting"}}}},
                 DEGRADED, "worker w1@h is not ready: reconnecting", [], id="a worker not ready"),
]


@pytest.mark.parametrize(("given", "status", "message", "recommendations"), ROWS)
def test_verdict_rule(given: dict[str, Any], status: str, message: str,
                      recommendations: list[str]) -> None:
    """Each situation gets its status, its message and its recommendations."""
    result = verdict(**given)
    assert (result["status"], result["message"], result["recommendations"]) == (
        status, message, recommendations)


def test_problems_add_up_in_one_degraded_verdict() -> None:
    """Several problems are all named, in a stable order, each with its advice."""
    result = verdict(missing=("w2@h",), queues={"a": queue(2000), "b": queue(3, consumers=())})
    assert result["message"] == ("queue 'a' holds 2000 tasks (threshold 1000); queue 'b' holds 3 "
                                 "tasks and no worker consumes it; worker w2@h stopped answering")
    assert len(result["recommendations"]) == 3


def test_body_has_the_monitoring_seeds_fields() -> None:
    """The body carries the seed's workers block, queue depths (-1 unknown) and unconsumed list."""
    result = verdict(queues={"celery": queue(None), "typo": queue(4, consumers=())})
    assert result["workers"] == {"healthy": True, "active_workers": ["w1@h"], "worker_count": 1}
    assert result["queues"] == {"celery": -1, "typo": 4}
    assert result["unconsumed_queues"] == ["typo"]
    assert result["broker_connected"] is True


def test_unhealthy_body_names_the_error_under_workers() -> None:
    """An unhealthy verdict repeats its first problem as workers.error, as the seed's body does."""
    result = verdict(workers={})
    assert result["workers"] == {"healthy": False, "active_workers": [], "worker_count": 0,
                                 "error": "No active Celery workers found"}
    assert verdict(broker_error="down")["broker_connected"] is False
