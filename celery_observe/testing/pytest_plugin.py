"""The pytest plugin: ``observe_*`` fixtures for testing your own tasks' metrics.

Registered through the ``pytest11`` entry point, so installing celery-observe enables it;
it stays inert until a test asks for one of its fixtures (importing this module loads no
Celery worker machinery, no Prometheus client and no psutil). The names all start with
``observe_``: pytest-celery's plugin takes ``celery_worker`` and friends, and
``celery.contrib.pytest`` the ``celery_*`` names, so all three can be installed together.

``observe_app``      your Celery app (override the fixture, or ``observe_app = proj:app``)
``observe_config``   the worker's settings (marker, then ``--observe-*``, then ini)
``observe_worker``   an observed worker of that app for the test
``observe_metrics``  its metrics, with assertions that say what was counted
``observe_cluster``  a ``Cluster`` client that has found the test's worker
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from .settings import ObserveSettings, ObserveSettingsError, from_options

if TYPE_CHECKING:
    from celery import Celery

    from ..cluster.client import Cluster
    from .inprocess import InProcessWorker
    from .reader import MetricsReader
    from .subprocess_worker import SubprocessWorker

#: (option, help) of each setting given as ``--observe-<option>`` or ini ``observe_<option>``.
OPTIONS = (
    ("app", "the Celery app to observe, as `celery -A` takes it (proj.celery:app)"),
    ("pool", "the test worker's pool: solo or threads (in the test process), prefork "
             "(a `celery worker` subprocess); default solo"),
    ("concurrency", "the test worker's concurrency (default 2; solo runs one task)"),
    ("broker", "a broker URL for the test worker (default: in-memory in the test process, "
               "a private filesystem broker for a subprocess); its test queues are purged "
               "after each test"),
    ("backend", "a result backend URL (default: one that goes with the default broker; "
                "with your own broker, your app's backend, or rpc:// if it has none)"),
    ("timeout", "seconds a fixture waits for the worker and an assertion for its counts "
                "(default 10)"),
)
MARKER = ("observe(pool=, concurrency=, broker=, backend=, queues=, timeout=): the observed "
          "test worker of this test (celery-observe's observe_worker fixture)")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("celery-observe", "observed Celery test workers (celery-observe)")
    for name, help_text in OPTIONS:
        group.addoption(f"--observe-{name}", dest=f"observe_{name}", default=None,
                        help=help_text)
        parser.addini(f"observe_{name}", help_text, default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


def _fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


@pytest.fixture
def observe_config(request: pytest.FixtureRequest) -> ObserveSettings:
    """The observed test worker's settings: observe marker, then --observe-* options, ini."""
    config = request.config
    try:
        settings = from_options({
            name: config.getoption(f"observe_{name}") or config.getini(f"observe_{name}")
            for name, _ in OPTIONS})
        marker = request.node.get_closest_marker("observe")
        if marker is not None:
            if marker.args:
                raise ObserveSettingsError("@pytest.mark.observe() takes keyword arguments only")
            settings = settings.with_marker(marker.kwargs)
    except ObserveSettingsError as exc:
        _fail(str(exc))
    return settings


@pytest.fixture
def observe_app(observe_config: ObserveSettings) -> Celery:
    """Your Celery app: override this fixture, or set observe_app = proj.celery:app (ini)."""
    if not observe_config.app_path:
        _fail("observe_app: no Celery app to observe. Return yours from an `observe_app` "
              "fixture in conftest.py, or set `observe_app = proj.celery:app` in the pytest "
              "configuration (or pass --observe-app proj.celery:app).")
    from celery.app.utils import find_app

    app: Celery = find_app(observe_config.app_path)
    return app


@pytest.fixture
def observe_worker(observe_app: Celery, observe_config: ObserveSettings,
                   tmp_path_factory: pytest.TempPathFactory,
                   ) -> Iterator[InProcessWorker | SubprocessWorker]:
    """An observed worker of observe_app for this test (.hostname, .port, .metrics_url)."""
    from .brokers import configuration_for, configured, consumed_queues

    settings = observe_config
    private = not settings.broker and not settings.in_process  # a filesystem broker of its own
    folder = tmp_path_factory.mktemp("observe-broker") if private else None
    conf = configuration_for(observe_app, settings, folder)
    queues = consumed_queues(observe_app, settings)
    purged = () if private else _purged_queues(observe_app, queues)
    with configured(observe_app, conf, purged) as app:
        if settings.in_process:
            yield from _in_process(app, settings, queues)
        else:
            yield from _subprocess(app, settings, conf, queues)


def _purged_queues(app: Celery, queues: list[str]) -> list[str]:
    """Every queue the test's tasks can be in (routed to a queue no worker consumes, too)."""
    from ..queues import configured_queue_names

    return sorted(configured_queue_names(app) | set(queues))


def _in_process(app: Celery, settings: ObserveSettings,
                queues: list[str]) -> Iterator[InProcessWorker]:
    from .inprocess import in_process_worker

    concurrency = 1 if settings.pool == "solo" else settings.concurrency
    with in_process_worker(app, pool=settings.pool, concurrency=concurrency,
                           queues=queues) as worker:
        yield worker


def _subprocess(app: Celery, settings: ObserveSettings, conf: dict[str, Any],
                queues: list[str]) -> Iterator[SubprocessWorker]:
    from .subprocess_worker import SubprocessWorker, import_path

    app_path = settings.app_path or import_path(app)
    if app_path is None:
        _fail(f"observe_worker: a {settings.pool} worker runs as a subprocess, which imports "
              "the app: set `observe_app = proj.celery:app` in the pytest configuration (no "
              "loaded module holds this app under a name)")
    worker = SubprocessWorker(app, app_path, conf, queues, pool=settings.pool,
                              concurrency=settings.concurrency)
    try:
        worker.start(timeout=max(30.0, settings.timeout))
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def observe_cluster(observe_app: Celery, observe_worker: InProcessWorker | SubprocessWorker,
                    observe_config: ObserveSettings) -> Iterator[Cluster]:
    """A celery_observe.Cluster of observe_app that has found this test's worker."""
    from ..cluster.client import Cluster
    from .waits import wait_until

    cluster = Cluster(observe_app)
    try:
        # Ready for tasks is not yet subscribed to broadcasts: wait till the worker answers.
        wait_until(lambda: observe_worker.hostname in cluster.ask("observe_status")[0],
                   observe_config.timeout, f"{observe_worker.hostname} to answer broadcasts")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def observe_metrics(observe_worker: InProcessWorker | SubprocessWorker,
                    observe_config: ObserveSettings,
                    request: pytest.FixtureRequest) -> MetricsReader:
    """observe_worker's metrics: assert_task_counts, assert_duration_under, no faults."""
    from .reader import MetricsReader

    return MetricsReader(observe_worker, lambda: request.getfixturevalue("observe_cluster"),
                         timeout=observe_config.timeout)
