"""A real Prometheus finds every worker through the API's HTTP service discovery."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_observe.testing import free_port, wait_until

from .test_api import PREFIX, api_app, backend, workers  # noqa: F401 - fixtures
from .workers import WorkerProcess

pytestmark = pytest.mark.broker

CONFIG = """
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: celery-workers
    http_sd_configs:
      - url: http://127.0.0.1:{api_port}{prefix}/prometheus/targets
        refresh_interval: 1s
"""


@pytest.fixture
def served_api(client: Celery) -> Iterator[int]:
    """The API in a real uvicorn server on a free port, as `observe serve` runs it."""
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api_app(client), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "uvicorn to start")
    yield port
    server.should_exit = True
    thread.join(10)


def prometheus_api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def test_prometheus_discovers_and_scrapes_every_worker(
        served_api: int, workers: list[WorkerProcess]) -> None:  # noqa: F811 - fixture
    """Prometheus with the README's http_sd_configs sees each worker's target up."""
    binary = shutil.which("prometheus")
    if binary is None:
        reason = "Debian's prometheus package is not installed (.ci/run installs it)"
        if os.environ.get("CELERY_OBSERVE_REQUIRE_BROKERS") == "1":
            pytest.fail(f"{reason}, and CELERY_OBSERVE_REQUIRE_BROKERS=1 forbids skipping")
        pytest.skip(reason)
    directory = Path(tempfile.mkdtemp(prefix="observe-prometheus-"))
    (directory / "prometheus.yml").write_text(CONFIG.format(api_port=served_api, prefix=PREFIX))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={directory / 'prometheus.yml'}",
         f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        expected = {f"127.0.0.1:{worker.port}" for worker in workers}

        def up() -> set[str]:
            try:
                active = prometheus_api(port, "/api/v1/targets")["data"]["activeTargets"]
            except OSError:
                return set()
            return {t["labels"]["instance"] for t in active if t["health"] == "up"}

        wait_until(lambda: up() == expected, 60, "Prometheus to scrape both workers")
        answer = prometheus_api(port, "/api/v1/query?query=celery_worker_info")["data"]
        assert {r["metric"]["worker"] for r in answer["result"]} == {
            w.hostname for w in workers}
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(directory, ignore_errors=True)
