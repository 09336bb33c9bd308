"""A test's broker, backend and remote-control exchange, put on the user's app and taken off.

The app under test is usually the project's own module-level app, shared by every test, so
the settings a test needs are applied for that test only and restored after it, with the
app's cached connection pool, result backend and control mailbox dropped each time (they
were built from the settings before). Each test gets a remote-control exchange of its own,
so a ``Cluster`` broadcast reaches this test's worker and no other on the same broker.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .settings import MEMORY_BROKER, ObserveSettings

if TYPE_CHECKING:
    from celery import Celery

#: Results as messages on the test's broker: ``result.get()`` returns as soon as the result
#: is there (the cache and file backends poll every 0.5 s).
RESULTS_BY_BROKER = "rpc://"
#: The filesystem transport's poll for a subprocess worker: broadcasts answer in ~0.1 s.
FILESYSTEM_POLL = 0.05


def configuration_for(app: Celery, settings: ObserveSettings,
                       folder: Path | None = None) -> dict[str, Any]:
    """The ``app.conf`` keys a test's worker and its client use.

    The default broker is the memory transport in-process and, for a subprocess worker, the
    filesystem transport in ``folder`` (:mod:`.filesystem`'s): no server either way, and
    results travel over the broker. A broker of the user's own keeps the app's transport
    options and, unless one is given, its result backend (``rpc://`` if it has none).
    """
    conf: dict[str, Any] = {"control_exchange": f"observe-{uuid.uuid4().hex[:12]}",
                            "broker_connection_retry_on_startup": True}
    if settings.broker:
        conf["broker_url"] = settings.broker
        backend = settings.backend or (None if app.conf.result_backend else RESULTS_BY_BROKER)
        if backend:
            conf["result_backend"] = backend
        return conf
    if settings.in_process:
        options = {**(app.conf.broker_transport_options or {}), "polling_interval": 0.01}
        return {**conf, "broker_url": MEMORY_BROKER, "broker_transport_options": options,
                "result_backend": settings.backend or RESULTS_BY_BROKER}
    if folder is None:
        raise ValueError("a subprocess worker on the default broker needs a folder for it")
    from .filesystem import SCHEME  # registers the transport in this process
    folders = {name: folder / name for name in ("queue", "processed", "control")}
    for path in folders.values():  # the filesystem transport needs its folders to exist
        path.mkdir(parents=True, exist_ok=True)
    options = {"data_folder_in": str(folders["queue"]), "data_folder_out": str(folders["queue"]),
               "processed_folder": str(folders["processed"]),
               "control_folder": str(folders["control"]), "polling_interval": FILESYSTEM_POLL}
    return {**conf, "broker_url": f"{SCHEME}://localhost/", "broker_transport_options": options,
            "result_backend": settings.backend or RESULTS_BY_BROKER}


def consumed_queues(app: Celery, settings: ObserveSettings) -> list[str]:
    """The queues the test's worker consumes: the marker's, else the app's own set."""
    if settings.queues:
        return list(settings.queues)
    queues = app.conf.task_queues
    if queues:
        return [name if isinstance(name, str) else name.name for name in queues]
    return [app.conf.task_default_queue]


def _drop_cached_clients(app: Celery) -> None:
    """Forget what the app built from its old settings (Celery's own after-fork reset,
    plus the backend and the control mailbox, which Celery never rebuilds).

    The connection pool is dropped, not closed: kombu keeps one pool per broker URL for the
    process, and hands the same one out again when the URL comes back.
    """
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
    app._backend_cache = None  # a thread-safe backend; others live per thread:
    with contextlib.suppress(AttributeError):
        del app._local.backend
    app.__dict__.pop("control", None)


def purge(app: Celery, queues: Iterable[str]) -> None:
    """Empty ``queues`` on the app's broker, so no message of this test reaches the next
    one's worker (the memory transport's queues live as long as the process)."""
    with app.connection_for_write() as connection:
        for name in sorted(set(queues)):
            with contextlib.suppress(Exception), connection.channel() as channel:
                channel.queue_purge(name)  # a queue that is not there is nothing to purge


@contextlib.contextmanager
def configured(app: Celery, conf: dict[str, Any],
               purge_queues: Iterable[str] = ()) -> Iterator[Celery]:
    """``app`` with ``conf`` applied; afterwards ``purge_queues`` emptied and the app's
    own settings back."""
    previous = {key: app.conf.get(key) for key in conf}
    app.conf.update(conf)
    _drop_cached_clients(app)
    try:
        yield app
    finally:
        try:
            with contextlib.suppress(Exception):  # a broker gone by now has nothing to purge
                purge(app, purge_queues)
        finally:
            app.conf.update(previous)
            _drop_cached_clients(app)
