"""Bad remote-control input gets a short error reply; the worker is unharmed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from celery import Celery

from celery_observe.testing import wait_until

from ..workers import WorkerProcess

HUGE = "x" * 1_000_000
ADD_SUCCEEDED = ("celery_task_total", frozenset({("task_name", "tests.workerapp.add"),
                                                 ("status", "success")}))

# (command, arguments, the error reply expected)
ABUSE: list[tuple[str, dict[str, Any], str]] = [
    ("observe_status", {"bogus": 1},
     "observe_status: observe_status() got an unexpected keyword argument 'bogus'"),
    ("observe_status", {"use_cache": "maybe"},
     "observe_status: use_cache must be true or false, not 'maybe'"),
    ("observe_health", {"use_cache": [1, 2]},
     "observe_health: use_cache must be true or false, not [1, 2]"),
    ("observe_tasks", {"use_cache": HUGE},
     "observe_tasks: use_cache must be true or false, not "
     "'xxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxx'"),
    ("observe_history", {"limit": None},
     "observe_history: limit must be a whole number from 1 to 1000, not None"),
    ("observe_history", {"limit": 10**30},
     "observe_history: limit must be a whole number from 1 to 1000, not "
     "1000000000000000000000000000000"),
    ("observe_history", {"limit": 1.5},
     "observe_history: limit must be a whole number from 1 to 1000, not 1.5"),
    ("observe_history", {"limit": -1},
     "observe_history: limit must be a whole number from 1 to 1000, not -1"),
    ("observe_summary", {"use_cache": {"a": 1}},
     "observe_summary: use_cache must be true or false, not {'a': 1}"),
    ("observe_cache_stats", {"verbose": True},
     "observe_cache_stats: observe_cache_stats() got an unexpected keyword argument "
     "'verbose'"),
    ("observe_cache_invalidate", {"cache_name": {"a": 1}},
     "observe_cache_invalidate: cache_name must be the name of a cache, not {'a': 1}"),
]


@pytest.mark.broker
def test_bad_arguments_get_short_error_replies_and_harm_nothing(
        broker: str, client: Celery, queue_name: str) -> None:
    """Unknown arguments, wrong types and huge values: one exact, short error reply each;
    afterwards the worker still runs tasks and counts no internal fault."""
    with WorkerProcess(broker, queue_name, pool="threads") as worker:
        wait_until(lambda: client.control.ping(destination=[worker.hostname], timeout=0.5),
                   20, "the worker to answer remote control")
        for command, arguments, error in ABUSE:
            replies = client.control.broadcast(command, arguments=arguments, reply=True,
                                               timeout=5, destination=[worker.hostname])
            assert replies == [{worker.hostname: {"error": error}}], (command, arguments)
            assert len(json.dumps(replies)) < 300
        client.send_task("tests.workerapp.add", (2, 3), queue=queue_name)
        wait_until(lambda: worker.metrics().get(ADD_SUCCEEDED) == 1, 10,
                   "the worker to run a task after the abuse")
        assert worker.status_code("/healthz") == 200
        assert not [key for key in worker.metrics()
                    if key[0] == "celery_observe_internal_errors_total"]
    assert worker.count_in_log("celery-observe:") == worker.count_in_log(
        "celery-observe: serving")
