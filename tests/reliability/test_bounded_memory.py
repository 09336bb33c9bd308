"""A million outcomes of ten thousand task names: series and memory stop growing at the caps.

This drives the code a worker's main process runs for each task (the recorder behind the
request hooks, and the task metrics receiver behind ``TaskCounter``) a million times in
this process, which takes seconds; a million tasks through a real worker take half an
hour (``benchmarks/memory.py`` measures a real worker's RSS).

Memory is held to what the observer keeps alive: tracemalloc counts every allocation made
in the last 100,000 outcomes that is still alive at the end (a leak of 5 bytes an outcome
would show; tracing all 500,000 of the second half would take minutes). RSS is reported
but not asserted: each ``collect()`` here builds ~92,000 samples (25 MB) and frees them,
and the allocator keeps some of those pages pinned by the few long-lived objects (history
entries) that later land in them, so RSS creeps by a few MB after each collect while the
live objects do not grow.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Callable, Iterator

import psutil
import pytest
from celery import Celery

from celery_observe import TaskCounter
from celery_observe.config import ObserveConfig
from celery_observe.worker.observer import Observer
from celery_observe.worker.outcome import SUCCESS, Outcome
from celery_observe.worker.recorder import MAX_ERROR_SERIES

OUTCOMES = 1_000_000
TASK_NAMES = 10_000
MAX_TASK_NAMES = 1_000
ERROR_TYPES = 200
CUSTOMERS = 50_000  # label values of a task metric, over its cap of 1,000 series
CHECKPOINTS = (250_000, 500_000, 1_000_000)
TRACED_FROM = 900_000
RETAINED_LIMIT = 512 * 1024  # the history ring alone replaces ~160 KiB meanwhile


@pytest.fixture
def observer() -> Iterator[Observer]:
    app = Celery("soak", broker="memory://", set_as_current=False)
    observer = Observer(app, ObserveConfig(enabled=True, max_task_names=MAX_TASK_NAMES))
    observer.task_code_metrics.start()  # no pipe: updates apply in this process, as in the worker
    yield observer
    observer.stop()
    app.close()


def series_count(observer: Observer) -> int:
    return sum(len(family.samples) for family in observer.collect())


def label_values(observer: Observer, label: str) -> set[str]:
    return {sample.labels[label] for family in observer.collect()
            for sample in family.samples if label in sample.labels}


def test_a_million_outcomes_plateau_at_the_caps(observer: Observer,
                                                figure: Callable[[str, str], None]) -> None:
    """Series count is the same at 500k and 1M outcomes, task names, error series and task
    metric series stop at their caps (+ 'other'), and what the last 100,000 outcomes leave
    alive is < 512 KiB."""
    rng = random.Random(7)
    recorder = observer.recorder
    items = TaskCounter("soak_items_total", "Items of the soak test.", ["customer"])
    retry = Outcome("retry", retry_reason="KeyError")
    failures = [Outcome("failure", error_type=f"Error{n}") for n in range(ERROR_TYPES)]
    process = psutil.Process()
    measured = {0: (series_count(observer), process.memory_info().rss)}
    retained = 0
    for done in range(1, OUTCOMES + 1):
        name = f"proj.tasks.t{rng.randrange(TASK_NAMES)}"
        recorder.started(name, published_at=None)
        # half succeed, a quarter are retried, a quarter fail with one of 200 exceptions
        outcome = SUCCESS if done % 2 else retry if done % 4 else rng.choice(failures)
        recorder.finished(name, outcome, 0.0)
        items.labels(f"c{rng.randrange(CUSTOMERS)}").inc()
        if done == TRACED_FROM:
            gc.collect()
            tracemalloc.start()
        if done in CHECKPOINTS:
            gc.collect()
            if done == OUTCOMES:
                retained = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
            measured[done] = (series_count(observer), process.memory_info().rss)

    series_half, series_full = measured[500_000][0], measured[1_000_000][0]
    assert series_full == series_half
    assert len(label_values(observer, "task_name")) == MAX_TASK_NAMES + 1
    error_series = [sample for family in observer.collect() for sample in family.samples
                    if sample.name == "celery_task_errors_total"]
    assert len([s for s in error_series if s.labels["error_type"] != "other"]) == MAX_ERROR_SERIES
    assert len(error_series) <= MAX_ERROR_SERIES + MAX_TASK_NAMES + 1  # + one 'other' each
    assert len(label_values(observer, "customer")) == 1_000 + 1
    assert retained < RETAINED_LIMIT
    figure(f"alive at {OUTCOMES:,} of what outcomes {TRACED_FROM + 1:,} on allocated",
           f"{retained / 1024:.0f} KiB (limit {RETAINED_LIMIT / 1024:.0f} KiB)")
    for done, (series, rss) in measured.items():
        figure(f"after {done:,} outcomes", f"{series:,} series, RSS {rss / 2**20:.1f} MiB "
               f"(test process)")
