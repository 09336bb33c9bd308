"""A bare `pip install celery-observe` runs: a worker imports no broker client it does not use.

kombu declares `packaging` only in its `redis` extra, and pytest brings it into every test
venv, which hid a worker that imported kombu's Redis transport whatever its broker. These
tests take `packaging` away from the worker's process, as a bare install has it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from celery_observe.testing import free_port, wait_until

from .conftest import broker_url
from .workers import REPO, WorkerProcess


@pytest.fixture
def without_packaging(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import packaging` fails as it does where it is not installed."""
    stub = tmp_path / "packaging"
    stub.mkdir()
    (stub / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'packaging\'", name="packaging")\n')
    path = os.pathsep.join(filter(None, [str(tmp_path), str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def test_demo_runs_without_packaging(without_packaging: dict[str, str]) -> None:
    """README command 1's demo (filesystem broker) reports its counts with no `packaging`."""
    result = subprocess.run(
        [sys.executable, "examples/demo.py", "--once", "--port", str(free_port())],
        cwd=REPO, env=without_packaging, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"success": 17' in result.stdout, result.stdout


@pytest.mark.broker
def test_observed_amqp_worker_runs_without_packaging(
        without_packaging: dict[str, str], queue_name: str) -> None:
    """An observed worker on RabbitMQ gets ready, counts a task and measures its queue."""
    from celery import Celery

    broker = broker_url("rabbitmq")
    with WorkerProcess(broker, queue_name, pool="threads", env=without_packaging) as worker:
        producer = Celery("producer", broker=broker, set_as_current=False)
        try:
            producer.send_task("tests.workerapp.add", (1, 2), queue=queue_name)
            success = ("celery_task_total", frozenset(
                {("task_name", "tests.workerapp.add"), ("status", "success")}))
            wait_until(lambda: worker.metrics().get(success) == 1, 30, "the task's success")
            length = ("celery_queue_length", frozenset({("queue_name", queue_name)}))
            assert worker.metrics()[length] == 0
        finally:
            with producer.connection_for_write() as connection:
                connection.default_channel.queue_delete(queue_name)
            producer.close()
        assert "packaging" not in worker.log()
