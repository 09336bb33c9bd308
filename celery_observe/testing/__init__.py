"""The harness for observed workers: runs in test processes and benchmarks, not in workers.

One set of helpers for tests/, benchmarks/ and the coming pytest plugin (which builds its
fixtures on these): start observed Celery workers in subprocesses (:class:`ObservedWorker`),
wait until a condition holds (:func:`wait_until`), read their metrics (:class:`Metrics`),
and learn the port a worker serves on from the OS, not from its log. Subprocesses started
here are tracked, so :func:`reap_all` ends every one (pool children included).
"""

from __future__ import annotations

from .metrics import Metrics, SampleKey, parse_metrics
from .ports import free_port, listening, listening_ports
from .processes import end_process, reap_all, signal_once, spawn
from .waits import WaitTimeoutError, wait_until
from .workers import ObservedWorker, WorkerError

__all__ = [
    "Metrics",
    "ObservedWorker",
    "SampleKey",
    "WaitTimeoutError",
    "WorkerError",
    "end_process",
    "free_port",
    "listening",
    "listening_ports",
    "parse_metrics",
    "reap_all",
    "signal_once",
    "spawn",
    "wait_until",
]
