"""Runs in clients (a CLI call, a web app, a script): ask every observed worker at once.

Importing it loads nothing of the worker's: no prometheus_client, no psutil.
"""

from __future__ import annotations

from .client import BrokerUnreachableError, Cluster
from .hints import WorkerHints

__all__ = ["BrokerUnreachableError", "Cluster", "WorkerHints"]
