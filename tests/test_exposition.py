"""/metrics, rendered from compact per-task storage, says exactly what prometheus_client would.

The reference is prometheus_client itself: real Counter, Gauge and Histogram objects fed
the same observations at the same (fake) times, rendered by its own ``generate_latest``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import prometheus_client.metrics
import pytest
from celery import Celery
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString

from celery_observe.cardinality import BoundedLabel
from celery_observe.config import DEFAULT_BUCKETS, ObserveConfig
from celery_observe.shapes import STATUSES
from celery_observe.worker.exposition import Exposition, _value
from celery_observe.worker.history import TaskHistory
from celery_observe.worker.metrics import WAIT_BUCKETS, OutcomeTotals, TaskMetrics
from celery_observe.worker.observer import Observer
from celery_observe.worker.outcome import REJECTED, REVOKED, SUCCESS, Outcome
from celery_observe.worker.recorder import Recorder

FAILURE = Outcome("failure", error_type="ValueError")
TIMED_OUT = Outcome("failure", error_type="TimeLimitExceeded", timed_out=True)
RETRY = Outcome("retry", retry_reason="KeyError")
OUTCOMES = (SUCCESS, REJECTED, REVOKED, FAILURE, RETRY, TIMED_OUT)
#: On a bound (it falls in that bucket), between bounds, zero, past the last bound, huge.
DURATIONS = (0.005, 0.0031, 0.0, 0.7, 7200.0, 9000.5, 3.5e6)
NAMES = ("proj.a", 'proj."quoted"', "proj.back\\slash", "proj.new\nline")
#: The queues outcomes come from: None is an outcome counted under no queue.
QUEUES = ("celery", "proj.bulk", "other", None)
#: Our celery_tasks_total lines (HELP and TYPE name it without _total in OpenMetrics).
OUR_QUEUE_TOTALS = re.compile(rb"(# (HELP|TYPE) )?celery_tasks[_ ]")
Samples = list[tuple[str, tuple[tuple[str, str], ...], float]]


class Clocks:
    """A monotonic clock and a wall clock the test moves; prometheus_client reads the wall."""

    def __init__(self) -> None:
        self.monotonic = 500.0
        self.wall = 1_764_000_000.25

    def tick(self, seconds: float = 1.5) -> None:
        self.monotonic += seconds
        self.wall += seconds


class Reference:
    """The same observations on prometheus_client's own metrics, as they were recorded
    before the compact storage."""

    def __init__(self, metrics: TaskMetrics) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(metrics.failure_rate)

        def doc(family: str) -> str:
            return next(f.documentation for f in metrics.per_task if f.name == family)

        registry = self.registry
        self.total = Counter("celery_task", doc("celery_task"), ["task_name", "status"],
                             registry=registry)
        self.duration = Histogram(
            "celery_task_duration_seconds", doc("celery_task_duration_seconds"),
            ["task_name", "status"], buckets=metrics.duration_layout.bounds, registry=registry)
        self.active = Gauge("celery_active_tasks", doc("celery_active_tasks"), ["task_name"],
                            registry=registry)
        self.errors = Counter("celery_task_errors", doc("celery_task_errors"),
                              ["task_name", "error_type"], registry=registry)
        self.retries = Counter("celery_task_retries", doc("celery_task_retries"),
                               ["task_name", "reason"], registry=registry)
        self.timeouts = Counter("celery_task_timeouts", doc("celery_task_timeouts"),
                                ["task_name"], registry=registry)
        self.wait = Histogram(
            "celery_task_queue_wait_seconds", doc("celery_task_queue_wait_seconds"),
            ["task_name"], buckets=WAIT_BUCKETS, registry=registry)
        self.last_success = Gauge(
            "celery_task_last_success_timestamp_seconds",
            doc("celery_task_last_success_timestamp_seconds"), ["task_name"],
            registry=registry)
        self.by_queue = Counter("celery_tasks", OutcomeTotals.DOCUMENTATION,
                                ["queue", "status"], registry=registry)
        self._seen: set[str] = set()
        self._queues: set[str] = set()

    def _see(self, name: str) -> None:
        if name not in self._seen:
            self._seen.add(name)
            for status in STATUSES:
                self.total.labels(name, status)
            self.active.labels(name)
            self.timeouts.labels(name)

    def started(self, name: str, wait: float | None) -> None:
        self._see(name)
        self.active.labels(name).inc()
        if wait is not None:
            self.wait.labels(name).observe(wait)

    def finished(self, name: str, outcome: Outcome, elapsed: float | None, ended: float,
                 queue: str | None = None) -> None:
        self._see(name)
        if queue is not None:
            if queue not in self._queues:  # every status of a queue, from its first outcome
                self._queues.add(queue)
                for status in STATUSES:
                    self.by_queue.labels(queue, status)
            self.by_queue.labels(queue, outcome.status).inc()
        if elapsed is not None:
            self.active.labels(name).dec()
        if outcome.timed_out:
            self.timeouts.labels(name).inc()
        self.total.labels(name, outcome.status).inc()
        if outcome.status == "success":
            self.last_success.labels(name).set(ended)
        if elapsed is not None:
            self.duration.labels(name, outcome.status).observe(elapsed)
        if outcome.error_type is not None:
            self.errors.labels(name, outcome.error_type).inc()
        if outcome.retry_reason is not None:
            self.retries.labels(name, outcome.retry_reason).inc()


class Recorded:
    """A recorder and its exposition on fake clocks, with the prometheus_client reference."""

    def __init__(self, clocks: Clocks) -> None:
        self.clocks = clocks
        self.registry = CollectorRegistry()
        self.metrics = TaskMetrics(self.registry, DEFAULT_BUCKETS)
        self.recorder = Recorder(self.metrics, TaskHistory(10), BoundedLabel("task_name", 100),
                                 clock=lambda: clocks.monotonic, wall_clock=lambda: clocks.wall)
        self.exposition = Exposition(self.recorder, self.metrics, self.registry)
        self.reference = Reference(self.metrics)

    def run(self, name: str, outcome: Outcome, duration: float | None,
            wait: float | None = None, queue: str | None = None) -> None:
        """One execution (``duration`` None: it never ran), recorded on both sides."""
        self.clocks.tick()
        if duration is not None:
            self.clocks.monotonic = 0.0  # so the recorder's elapsed time is ``duration`` exactly
            published = None if wait is None else self.clocks.wall - wait
            self.recorder.started(name, published_at=published)
            self.reference.started(name, None if published is None
                                   else max(0.0, self.clocks.wall - published))
            self.clocks.tick(duration)
        self.recorder.finished(name, outcome, None if duration is None else 0.0, queue=queue)
        self.reference.finished(name, outcome, duration, self.clocks.wall, queue)

    def every_outcome(self, name: str) -> None:
        for index, outcome in enumerate(OUTCOMES):
            never_ran = outcome is REVOKED and index % 2 == 0
            self.run(name, outcome, None if never_ran else DURATIONS[index % len(DURATIONS)],
                     wait=DURATIONS[(index + 3) % len(DURATIONS)],
                     queue=QUEUES[index % len(QUEUES)])

    def pages(self, openmetrics: bool) -> tuple[Samples, Samples]:
        """(the exposition's page, prometheus_client's), as sorted samples."""
        parse, generate = (parse_om, generate_openmetrics) if openmetrics else (
            parse_text, generate_text)
        rest = generate(self.registry)
        # the reference's celery_tasks_total is a prometheus_client Counter: not ours too
        rest = b"".join(line for line in rest.splitlines(keepends=True)
                        if not OUR_QUEUE_TOTALS.match(line))
        reference = generate(self.reference.registry)
        if openmetrics:  # one page: a single # EOF at its end
            reference = reference.removesuffix(b"# EOF\n")
        return (samples(self.exposition.render(openmetrics), parse),
                samples(reference + rest, parse))


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    clocks = Clocks()
    monkeypatch.setattr(prometheus_client.metrics, "time", SimpleNamespace(
        time=lambda: clocks.wall))  # the reference's _created stamps
    return Recorded(clocks)


@pytest.fixture
def observer() -> Iterator[Observer]:
    app = Celery("exposition", broker="memory://", set_as_current=False)
    observer = Observer(app, ObserveConfig(enabled=True))
    yield observer
    observer.stop()
    app.close()


def samples(page: bytes, parse: Callable[[str], object]) -> Samples:
    """The page's samples, but the queue-depth cache's figures: each render reads that
    cache, so they move by one between the two renders a test compares."""
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                  for family in parse(page.decode()) for s in family.samples  # type: ignore[attr-defined]
                  if s.labels.get("cache") != "queue_status")


FORMATS = pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])


@FORMATS
def test_page_has_the_samples_prometheus_client_renders(recorded: Recorded,
                                                        openmetrics: bool) -> None:
    """Every sample, label and value (``_created`` too) equals prometheus_client's rendering
    of the same observations, also for task names with quotes, backslashes and newlines;
    OpenMetrics passes its strict parser."""
    for name in NAMES:
        recorded.every_outcome(name)
    page, reference = recorded.pages(openmetrics)
    assert page == reference
    # 5 histograms of 23 series, 21 other series per name; 5 statuses of 3 queues; the
    # dropped_label_values counter of queue "other"
    assert len(page) == 4 * 136 + 3 * 5 * 2 + 2


@FORMATS
def test_without_created_series_the_page_is_still_prometheus_clients(
        recorded: Recorded, openmetrics: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """PROMETHEUS_DISABLE_CREATED_SERIES (prometheus_client's switch, read at import)
    drops every ``_created`` sample, ours as its own."""
    monkeypatch.setattr(prometheus_client.metrics, "_use_created", False)
    for name in NAMES:
        recorded.every_outcome(name)
    page, reference = recorded.pages(openmetrics)
    assert page == reference
    assert not [name for name, _, _ in page if name.endswith("_created")]
    # per name, 9 counters' and 5 histograms' _created gone; the queues' and dropped's
    assert len(page) == 4 * (136 - 9 - 5) + 3 * 5 + 1


@FORMATS
def test_a_change_after_a_scrape_shows_in_the_next(recorded: Recorded,
                                                   openmetrics: bool) -> None:
    """A task's cached lines are written again once it records something new, the
    histograms that gained an observation among them."""
    for name in ("proj.a", "proj.b"):
        recorded.every_outcome(name)
    recorded.exposition.render(openmetrics)
    recorded.run("proj.a", SUCCESS, 0.02, wait=0.3)
    recorded.run("proj.a", FAILURE, 40.0)
    page, reference = recorded.pages(openmetrics)
    assert page == reference
    totals = {dict(labels)["task_name"]: value for name, labels, value in page
              if name == "celery_task_total" and ("status", "success") in labels}
    assert totals == {"proj.a": 2.0, "proj.b": 1.0}


@FORMATS
def test_a_new_status_after_a_scrape_keeps_no_other_histograms_lines(
        recorded: Recorded, openmetrics: bool) -> None:
    """A task whose first run was retried and whose second succeeds, scraped between them
    (as a flaky task is): the new success histogram is written, not the lines of the
    queue-wait histogram that held the same count at the same place before."""
    recorded.run("proj.flaky", RETRY, 0.02, wait=0.3)
    recorded.exposition.render(openmetrics)
    recorded.run("proj.flaky", SUCCESS, 0.04)
    page, reference = recorded.pages(openmetrics)
    assert page == reference


def test_an_unchanged_page_is_served_again_and_a_new_name_joins_it(recorded: Recorded) -> None:
    """Two scrapes with nothing recorded between them say the same; a name seen for the
    first time then is on the next page."""
    recorded.every_outcome("proj.a")
    first = recorded.exposition.render(False)
    assert recorded.exposition.render(False) == first
    recorded.run("proj.new", SUCCESS, 0.5)
    page, reference = recorded.pages(False)
    assert page == reference
    assert ("celery_task_total", (("status", "success"), ("task_name", "proj.new")), 1.0) in page


def test_records_from_many_threads_while_rendering_lose_nothing(recorded: Recorded) -> None:
    """Two threads recording the same task names while a third renders: every outcome
    counted once, the page equal to prometheus_client's."""
    runs, names = 2000, ("proj.a", "proj.b")
    done = threading.Event()

    def record() -> None:
        for index in range(runs):
            name = names[index % 2]
            recorded.recorder.started(name)
            recorded.recorder.finished(name, SUCCESS, recorded.clocks.monotonic - 0.25,
                                       queue="celery")

    def render() -> None:
        while not done.is_set():
            recorded.exposition.render(False)

    renderer = threading.Thread(target=render)
    renderer.start()
    writers = [threading.Thread(target=record) for _ in range(2)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    renderer.join()
    for index in range(2 * runs):  # the same observations, one after another
        recorded.reference.started(names[index % 2], None)
        recorded.reference.finished(names[index % 2], SUCCESS, 0.25, recorded.clocks.wall,
                                    "celery")
    page, reference = recorded.pages(False)
    assert page == reference
    assert sum(value for name, labels, value in page if name == "celery_task_total") == 4000
    assert sum(value for name, labels, value in page if name == "celery_tasks_total") == 4000


def test_values_are_written_as_prometheus_client_writes_them() -> None:
    """Integers, fractions, tiny and huge values, Unix times, infinities and NaN."""
    values = [0.0, -0.0, 1.0, 0.005, 1e-7, 123456.789, 999999.9999, 1e6, 1.5e6, 2.5e7,
              1_764_000_000.25, 1e16, 1e22, -1e7, -3.5, math.inf, -math.inf, math.nan]
    assert [_value(value) for value in values] == [floatToGoString(value) for value in values]


def test_a_fault_in_the_failure_rate_costs_its_family_only(recorded: Recorded,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The failure rate raising: the page lacks that family; each scrape counts a fault."""
    recorded.every_outcome("proj.a")

    def broken() -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(recorded.metrics.failure_rate, "rates", broken)
    for _ in range(2):
        page = samples(recorded.exposition.render(False), parse_text)
    assert not [s for s in page if s[0] == "celery_task_failure_rate"]
    assert ("celery_observe_internal_errors_total", (("component", "failure rate"),),
            1.0) in page  # the scrape before: this one's fault comes after its counter
    assert ("celery_task_total", (("status", "success"), ("task_name", "proj.a")), 1.0) in page


def test_switching_formats_renders_each_correctly(recorded: Recorded) -> None:
    """A text scrape after an OpenMetrics one (and back) is never served the other's lines."""
    recorded.every_outcome("proj.a")
    for openmetrics in (True, False, True):
        page = recorded.exposition.render(openmetrics)
        assert page.endswith(b"# EOF\n") is openmetrics
        assert (b"# TYPE celery_task counter\n" in page) is openmetrics
        assert (b"# TYPE celery_task_created gauge\n" in page) is not openmetrics


@FORMATS
def test_a_worker_that_ran_nothing_yet_describes_every_family(recorded: Recorded,
                                                             openmetrics: bool) -> None:
    """Before the first task, the page has each per-task family's HELP and TYPE, as
    prometheus_client renders a family without samples."""
    page, reference = recorded.pages(openmetrics)
    assert page == reference == []
    text = recorded.exposition.render(openmetrics)
    for family in recorded.metrics.per_task:
        shown = f"{family.name}_total" if family.kind == "counter" and not openmetrics \
            else family.name
        assert f"# TYPE {shown} {family.kind}\n".encode() in text


def test_each_family_is_described_once(recorded: Recorded) -> None:
    """HELP and TYPE appear once per family however many task names there are."""
    for index in range(3):
        recorded.every_outcome(f"proj.t{index}")
    page = recorded.exposition.render(False).decode()
    assert page.count("# TYPE celery_task_total counter") == 1
    assert page.count("# TYPE celery_task_duration_seconds histogram") == 1
    assert page.count("# TYPE celery_task_failure_rate gauge") == 1


@FORMATS
def test_observer_collect_yields_what_the_page_shows(observer: Observer,
                                                    openmetrics: bool) -> None:
    """generate_latest(observer) has the page's samples (tools and tests read it)."""
    for name in NAMES:
        for outcome in OUTCOMES:
            observer.recorder.started(name, published_at=time.time() - 0.5)
            observer.recorder.finished(name, outcome, time.monotonic() - 0.25)
    parse, generate = (parse_om, generate_openmetrics) if openmetrics else (
        parse_text, generate_text)
    page = samples(observer.exposition.render(openmetrics), parse)
    assert samples(generate(observer), parse) == page


def test_the_queue_depth_cache_is_the_one_exported(observer: Observer) -> None:
    """A scrape reads queue depths through the exported queue_status cache: a miss, then a hit."""
    def figure(name: str) -> float:
        page = parse_text(observer.exposition.render(False).decode())
        return next(s.value for family in page for s in family.samples
                    if s.name == name and s.labels.get("cache") == "queue_status")

    assert figure("celery_observe_cache_misses_total") == 0  # read before this scrape's lookup
    assert figure("celery_observe_cache_misses_total") == 1
    assert figure("celery_observe_cache_hits_total") == 1
