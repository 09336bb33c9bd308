"""celery-observe: every Celery worker serves its own metrics, probes and status.

The package is laid out by the process the code runs in: ``worker/`` in the worker's main
process, ``task_side/`` in task code (a pool child), ``cluster/`` in clients (CLI, web
apps), ``testing/`` in test suites; the modules at the top are shared by all of them and
load no Prometheus client and no psutil.

Celery imports this package on every ``celery`` command (through the ``celery.commands``
entry point), so the public names below load their modules on first use: a plain
``celery worker`` or ``celery inspect`` does not pay for prometheus_client, psutil or the
broker clients it will not use.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers and readers; loaded lazily below
    from .cache import MetricsCache as MetricsCache
    from .cluster.client import BrokerUnreachableError as BrokerUnreachableError
    from .cluster.client import Cluster as Cluster
    from .cluster.hints import WorkerHints as WorkerHints
    from .config import ObserveConfig as ObserveConfig
    from .config import ObserveConfigError as ObserveConfigError
    from .config import resolve_config as resolve_config
    from .named_caches import CacheSet as CacheSet
    from .task_side.metrics import TaskCounter as TaskCounter
    from .task_side.metrics import TaskGauge as TaskGauge
    from .task_side.metrics import TaskHistogram as TaskHistogram
    from .task_side.monitored import MonitoredTask as MonitoredTask
    from .task_side.monitored import monitor_task as monitor_task
    from .task_side.publish import stamp_publish_times as stamp_publish_times
    from .worker.bootstep import ObserveConsumerStep as ObserveConsumerStep
    from .worker.bootstep import ObserveStep as ObserveStep
    from .worker.bootstep import install as install
    from .worker.observer import Observer as Observer
    from .worker.outcome import Outcome as Outcome

try:
    __version__ = version("celery-observe")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

_HOMES = {
    "BrokerUnreachableError": "cluster.client", "CacheSet": "named_caches",
    "Cluster": "cluster.client", "MetricsCache": "cache", "MonitoredTask": "task_side.monitored",
    "ObserveConfig": "config", "ObserveConfigError": "config",
    "ObserveConsumerStep": "worker.bootstep", "ObserveStep": "worker.bootstep",
    "Observer": "worker.observer", "Outcome": "worker.outcome",
    "TaskCounter": "task_side.metrics", "TaskGauge": "task_side.metrics",
    "TaskHistogram": "task_side.metrics", "install": "worker.bootstep",
    "monitor_task": "task_side.monitored", "resolve_config": "config",
    "stamp_publish_times": "task_side.publish", "WorkerHints": "cluster.hints",
}

__all__ = sorted([*_HOMES, "__version__"])


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'celery_observe' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
