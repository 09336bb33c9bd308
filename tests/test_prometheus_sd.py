"""A real Prometheus finds every worker through the API's HTTP service discovery."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from celery_observe.testing import wait_until

from .prometheus_server import Prometheus, serving
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
    with serving(api_app(client)) as port:
        yield port


def test_prometheus_discovers_and_scrapes_every_worker(
        served_api: int, workers: list[WorkerProcess]) -> None:  # noqa: F811 - fixture
    """Prometheus with the README's http_sd_configs sees each worker's target up."""
    with Prometheus(CONFIG.format(api_port=served_api, prefix=PREFIX)) as prometheus:
        expected = {f"127.0.0.1:{worker.port}" for worker in workers}
        wait_until(lambda: prometheus.targets_up().get("celery-workers") == expected, 60,
                   "Prometheus to scrape both workers")
        answer = prometheus.query("celery_worker_info")
    assert {r["metric"]["worker"] for r in answer} == {w.hostname for w in workers}
