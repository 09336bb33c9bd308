"""celery-observe: every Celery worker serves its own metrics, probes and status."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .bootstep import ObserveConsumerStep, ObserveStep, install
from .cache import CacheSet, MetricsCache
from .cluster import BrokerUnreachableError, Cluster
from .config import ObserveConfig, ObserveConfigError, resolve_config
from .monitored import MonitoredTask, monitor_task
from .observer import Observer
from .outcome import Outcome
from .publish import stamp_publish_times
from .task_metrics import TaskCounter, TaskGauge, TaskHistogram

try:
    __version__ = version("celery-observe")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "BrokerUnreachableError",
    "CacheSet",
    "Cluster",
    "MetricsCache",
    "MonitoredTask",
    "ObserveConfig",
    "ObserveConfigError",
    "ObserveConsumerStep",
    "ObserveStep",
    "Observer",
    "Outcome",
    "TaskCounter",
    "TaskGauge",
    "TaskHistogram",
    "__version__",
    "install",
    "monitor_task",
    "resolve_config",
    "stamp_publish_times",
]
