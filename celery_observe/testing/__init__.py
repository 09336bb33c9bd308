"""The harness for observed workers: runs in test processes and benchmarks, not in workers.

One set of helpers for tests/, benchmarks/ and the pytest plugin (:mod:`.pytest_plugin`,
which builds its ``observe_*`` fixtures on these): start observed Celery workers in
subprocesses (:class:`ObservedWorker`) or in this process (:class:`InProcessWorker`), wait
until a condition holds (:func:`wait_until`), read their metrics (:class:`Metrics`,
:class:`MetricsReader`), and learn the port a worker serves on from the OS, not from its
log. Subprocesses started here are tracked, so :func:`reap_all` ends every one (pool
children included).

pytest imports the plugin at start-up in every project where celery-observe is installed,
so the names below load their modules on first use: a test run that uses no ``observe_*``
fixture loads no Prometheus client, no psutil and no worker machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers and readers; loaded lazily below
    from .inprocess import InProcessWorker as InProcessWorker
    from .metrics import Metrics as Metrics
    from .metrics import SampleKey as SampleKey
    from .metrics import parse_metrics as parse_metrics
    from .ports import free_port as free_port
    from .ports import listening as listening
    from .ports import listening_ports as listening_ports
    from .processes import end_process as end_process
    from .processes import reap_all as reap_all
    from .processes import signal_once as signal_once
    from .processes import spawn as spawn
    from .reader import MetricsReader as MetricsReader
    from .waits import WaitTimeoutError as WaitTimeoutError
    from .waits import wait_until as wait_until
    from .workers import ObservedWorker as ObservedWorker
    from .workers import WorkerError as WorkerError

_HOMES = {
    "InProcessWorker": "inprocess", "Metrics": "metrics", "MetricsReader": "reader",
    "ObservedWorker": "workers", "SampleKey": "metrics", "WaitTimeoutError": "waits",
    "WorkerError": "workers", "end_process": "processes", "free_port": "ports",
    "listening": "ports", "listening_ports": "ports", "parse_metrics": "metrics",
    "reap_all": "processes", "signal_once": "processes", "spawn": "processes",
    "wait_until": "waits",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'celery_observe.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
