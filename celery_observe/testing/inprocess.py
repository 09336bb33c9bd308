"""An observed worker in the test process: Celery's ``start_worker`` with ``install(app)``.

Celery's test worker runs its bootsteps in a thread, so the observer starts, serves on a
port of its own and stops as in a real worker (the terminate path). Solo and threads only:
a prefork pool forked from a test process is the subprocess worker's job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .http import ServedOverHttp

if TYPE_CHECKING:
    from celery import Celery

    from ..worker.observer import Observer


#: Test workers need no unique name: each test talks over a control exchange of its own.
HOSTNAME = "observe-worker@localhost"


class InProcessWorker(ServedOverHttp):
    """A running in-process observed worker: its hostname, pool and HTTP server."""

    def __init__(self, app: Celery, controller: Any, pool: str, concurrency: int) -> None:
        self.app, self.controller = app, controller
        self.hostname: str = controller.hostname
        self.pool, self.concurrency = pool, concurrency
        self.address = "127.0.0.1"
        observer = self.observer
        if observer is None or observer.bound_port is None:
            raise RuntimeError(
                f"the worker {self.hostname} started without celery-observe serving: its "
                "log says why (is app.conf.observe_enabled False?)")
        self.port: int | None = observer.bound_port

    @property
    def observer(self) -> Observer | None:
        """The worker's :class:`~celery_observe.Observer` (None if observation is off)."""
        found: Observer | None = getattr(self.controller, "celery_observe", None)
        return found


@contextlib.contextmanager
def in_process_worker(app: Celery, *, pool: str = "solo", concurrency: int = 1,
                      queues: list[str] | None = None, hostname: str | None = None,
                      loglevel: str = "WARNING",
                      shutdown_timeout: float = 10.0) -> Iterator[InProcessWorker]:
    """Start an observed worker of ``app`` in this process, on a free loopback port."""
    from celery.contrib.testing.worker import start_worker

    from ..worker.bootstep import install

    install(app)
    hostname = hostname or HOSTNAME
    options: dict[str, Any] = {"queues": queues} if queues else {}
    with start_worker(app, pool=pool, concurrency=concurrency, perform_ping_check=False,
                      loglevel=loglevel, shutdown_timeout=shutdown_timeout, hostname=hostname,
                      observe_port=0, observe_address="127.0.0.1", **options) as controller:
        try:
            yield InProcessWorker(app, controller, pool, concurrency)
        finally:
            _wake_to_stop(app, hostname)


def _wake_to_stop(app: Celery, hostname: str) -> None:
    """Have ``start_worker`` stop its worker now rather than after its 2 s broker waits."""
    from celery.worker import state

    state.should_terminate = 0  # what start_worker sets next; it resets it after the join
    wake_loop(app, hostname)


def wake_loop(app: Celery, hostname: str) -> None:
    """Wake a stopping worker's loop twice, so it ends now instead of in 2 to 4 s.

    Celery's blocking loop (solo and threads, and prefork on a virtual transport such as
    memory or filesystem) checks for shutdown between two ``drain_events(timeout=2.0)``,
    then drains once more on its way out. A message to the worker ends each wait.
    """
    with contextlib.suppress(Exception):  # a broker gone by now: the loop times out instead
        for _ in range(2):
            app.control.broadcast("ping", destination=[hostname])
