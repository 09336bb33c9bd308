"""The tree shows the processes: a client or task module loads nothing of the worker's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .workers import REPO

WORKER_ONLY = ("prometheus_client", "psutil", "celery_observe.worker")


def loaded_after(statement: str) -> list[str]:
    """The worker-only modules a fresh interpreter has loaded after ``statement``."""
    code = (f"import json, sys; {statement}; "
            f"print(json.dumps(sorted(m for m in {WORKER_ONLY!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=REPO, check=True)
    loaded: list[str] = json.loads(result.stdout)
    return loaded


@pytest.mark.parametrize("statement", [
    "import celery_observe.cluster",
    "from celery_observe import Cluster",
    "from celery_observe.cluster import cli",
    "import celery_observe.task_side.metrics, celery_observe.task_side.monitored",
    "from celery_observe import TaskCounter, MonitoredTask, stamp_publish_times",
    "import celery_observe.queues, celery_observe.named_caches, celery_observe.faults",
])
def test_importing_loads_no_worker_module(statement: str) -> None:
    """Clients, task code and the shared modules import no Prometheus client or psutil."""
    assert loaded_after(statement) == []


def test_the_entry_point_loads_no_prometheus_or_psutil() -> None:
    """What every `celery` command imports (our entry point) leaves the heavy parts out."""
    assert [m for m in loaded_after("import celery_observe.commands")
            if not m.startswith("celery_observe.")] == []
