"""pytest-celery's Docker worker, observed: a worker container class to hand its fixtures.

pytest-celery (1.3) runs its workers in Docker containers built from a class the
``default_worker_container_cls`` fixture returns. This one starts that worker with
``--observe`` on every address of the container and publishes the port::

    @pytest.fixture
    def default_worker_container_cls():
        return ObservedWorkerContainer

The container's image must have celery-observe installed (pytest-celery's default image
installs Celery and pytest-celery only: build yours from a Dockerfile that adds it). The
class is checked here without Docker; the Docker run itself is not tested on these machines.
"""

from __future__ import annotations

from typing import Any

from pytest_celery import CeleryWorkerContainer

#: The worker's HTTP port inside the container (the plugin's default port).
OBSERVE_PORT = 9540


class ObservedWorkerContainer(CeleryWorkerContainer):  # type: ignore[misc]
    """pytest-celery's worker container, running ``celery worker --observe``."""

    @classmethod
    def command(cls, *args: str, **kwargs: Any) -> list[str]:
        observe = ("--observe", "--observe-address", "0.0.0.0",
                   "--observe-port", str(OBSERVE_PORT))
        command: list[str] = super().command(*args, *observe, **kwargs)
        return command

    @classmethod
    def ports(cls) -> dict[str, Any]:
        """pytest-celery's ports, and the worker's HTTP port on a free port of the host."""
        return {**(super().ports() or {}), f"{OBSERVE_PORT}/tcp": None}
