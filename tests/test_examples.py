"""The task-processing example's commands run and count their load exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from .conftest import broker_url
from .workers import REPO

COUNTS = ('Outcomes counted by the workers (/status): {"failure": 2, "rejected": 0, '
          '"retry": 2, "revoked": 0, "success": 26}')
QUEUES = """Queues (Cluster.queues()):
  analytics         length=0 consumers=1
  cache_operations  length=0 consumers=1
  default           length=0 consumers=1
  high_priority     length=0 consumers=1
  low_priority      length=0 consumers=1
  search_index      length=2 consumers=0  <- messages and no consumer
"""
LABELS = ('  celery_monitored_task_completed_total{customer_id="7",task_name='
          '"dashboard.tasks.send_notification"} 2.0\n'
          '  celery_monitored_task_completed_total{customer_id="8",task_name='
          '"dashboard.tasks.send_notification"} 2.0\n')


def run_example(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "examples/taskprocessing/run.py", "--rounds", "2", "--once",
         "--port", "0", *args], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_example_on_the_embedded_broker(tmp_path: Path) -> None:
    """Two rounds: 26 successes, 2 failures, 2 retries, 2 tasks left where nobody consumes."""
    out = run_example("--data-dir", str(tmp_path))
    assert COUNTS in out
    assert "  interactive@localhost: retry=2, success=18\n  batch@localhost: failure=2, " \
           "success=8\n" in out
    assert QUEUES in out
    assert LABELS in out
    assert (f"TASKPROCESSING_DATA_DIR={tmp_path} celery -A examples.taskprocessing.app "
            "observe status") in out


@pytest.mark.broker
def test_the_example_on_redis() -> None:
    """The same load on Redis (a database of this test's own) counts the same."""
    url = broker_url("redis", db=14)
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        out = run_example("--broker", url)
    finally:
        client.flushdb()
        client.close()
    assert COUNTS in out
    assert QUEUES in out
    assert f"CELERY_BROKER_URL={url} " in out


def test_the_examples_own_tests_pass_with_the_observe_fixtures(tmp_path: Path) -> None:
    """`pytest examples/taskprocessing/test_tasks.py`, as its user runs it: 2 passed."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "examples/taskprocessing/test_tasks.py"], cwd=REPO, capture_output=True, text=True,
        timeout=120, env={**os.environ, "TASKPROCESSING_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
