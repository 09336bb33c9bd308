"""celery-observe: every Celery worker serves its own metrics, probes and status.

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
    from .bootstep import ObserveConsumerStep as ObserveConsumerStep
    from .bootstep import ObserveStep as ObserveStep
    from .bootstep import install as install
    from .cache import CacheSet as CacheSet
    from .cache import MetricsCache as MetricsCache
    from .cluster import BrokerUnreachableError as BrokerUnreachableError
    from .cluster import Cluster as Cluster
    from .config import ObserveConfig as ObserveConfig
    from .config import ObserveConfigError as ObserveConfigError
    from .config import resolve_config as resolve_config
    from .monitored import MonitoredTask as MonitoredTask
    from .monitored import monitor_task as monitor_task
    from .observer import Observer as Observer
    from .outcome import Outcome as Outcome
    from .publish import stamp_publish_times as stamp_publish_times
    from .task_metrics import TaskCounter as TaskCounter
    from .task_metrics import TaskGauge as TaskGauge
    from .task_metrics import TaskHistogram as TaskHistogram

try:
    __version__ = version("celery-observe")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

_HOMES = {
    "BrokerUnreachableError": "cluster", "CacheSet": "cache", "Cluster": "cluster",
    "MetricsCache": "cache", "MonitoredTask": "monitored", "ObserveConfig": "config",
    "ObserveConfigError": "config", "ObserveConsumerStep": "bootstep",
    "ObserveStep": "bootstep", "Observer": "observer", "Outcome": "outcome",
    "TaskCounter": "task_metrics", "TaskGauge": "task_metrics",
    "TaskHistogram": "task_metrics", "install": "bootstep", "monitor_task": "monitored",
    "resolve_config": "config", "stamp_publish_times": "publish",
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
