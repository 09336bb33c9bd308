"""What the benchmark app and the scripts driving it must agree on (kept import-light:
every benchmark worker imports it)."""

from __future__ import annotations

BROKER_ENV = "CELERY_OBSERVE_BENCH_BROKER"
QUEUE_ENV = "CELERY_OBSERVE_BENCH_QUEUE"
NAMES_ENV = "CELERY_OBSERVE_BENCH_NAMES"


def task_name(index: int) -> str:
    """The name of generated task number ``index``."""
    return f"bench.named_{index:04d}"
