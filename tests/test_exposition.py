"""/metrics rendered with per-task caching says exactly what prometheus_client would."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from celery import Celery
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from celery_observe.config import ObserveConfig
from celery_observe.worker.observer import Observer
from celery_observe.worker.outcome import REJECTED, REVOKED, SUCCESS, Outcome

OUTCOMES = (SUCCESS, REJECTED, REVOKED, Outcome("failure", error_type="ValueError"),
            Outcome("retry", retry_reason="KeyError"),
            Outcome("failure", error_type="TimeLimitExceeded", timed_out=True))
Samples = list[tuple[str, tuple[tuple[str, str], ...], float]]


@pytest.fixture
def observer() -> Iterator[Observer]:
    app = Celery("exposition", broker="memory://", set_as_current=False)
    observer = Observer(app, ObserveConfig(enabled=True))
    yield observer
    observer.stop()
    app.close()


def record_every_outcome(observer: Observer, name: str) -> None:
    for outcome in OUTCOMES:
        observer.recorder.started(name, published_at=time.time() - 0.5)
        observer.recorder.finished(name, outcome, time.monotonic() - 0.25)


def samples(page: bytes, parse: Callable[[str], object]) -> Samples:
    """The page's samples, but the queue-depth cache's figures: each render reads that
    cache, so they move by one between the two renders a test compares."""
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                  for family in parse(page.decode()) for s in family.samples  # type: ignore[attr-defined]
                  if s.labels.get("cache") != "queue_status")


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_page_has_the_samples_prometheus_client_renders(observer: Observer,
                                                        openmetrics: bool) -> None:
    """Every sample, label and value equals prometheus_client's own rendering, also for task
    names with quotes, backslashes and newlines; OpenMetrics passes its strict parser."""
    for name in ("proj.a", 'proj."quoted"', "proj.back\\slash", "proj.new\nline"):
        record_every_outcome(observer, name)
    parse, generate = (parse_om, generate_openmetrics) if openmetrics else (
        parse_text, generate_text)
    page = observer.exposition.render(openmetrics)
    assert samples(page, parse) == samples(generate(observer), parse)


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_a_change_after_a_scrape_shows_in_the_next(observer: Observer,
                                                   openmetrics: bool) -> None:
    """A task's cached lines are rendered again once it records something new."""
    parse = parse_om if openmetrics else parse_text
    record_every_outcome(observer, "proj.a")
    record_every_outcome(observer, "proj.b")
    observer.exposition.render(openmetrics)
    observer.recorder.started("proj.a")
    observer.recorder.finished("proj.a", SUCCESS, time.monotonic())
    page = observer.exposition.render(openmetrics)
    assert samples(page, parse) == samples(
        (generate_openmetrics if openmetrics else generate_text)(observer), parse)
    totals = {dict(labels)["task_name"]: value for name, labels, value in samples(page, parse)
              if name == "celery_task_total" and ("status", "success") in labels}
    assert totals == {"proj.a": 2.0, "proj.b": 1.0}


def test_switching_formats_renders_each_correctly(observer: Observer) -> None:
    """A text scrape after an OpenMetrics one (and back) is never served the other's lines."""
    record_every_outcome(observer, "proj.a")
    for openmetrics in (True, False, True):
        page = observer.exposition.render(openmetrics)
        assert page.endswith(b"# EOF\n") is openmetrics
        assert (b"# TYPE celery_task counter\n" in page) is openmetrics
        assert (b"# TYPE celery_task_created gauge\n" in page) is not openmetrics


def test_each_family_is_described_once(observer: Observer) -> None:
    """HELP and TYPE appear once per family however many task names there are."""
    for index in range(3):
        record_every_outcome(observer, f"proj.t{index}")
    page = observer.exposition.render(False).decode()
    assert page.count("# TYPE celery_task_total counter") == 1
    assert page.count("# TYPE celery_task_duration_seconds histogram") == 1


def test_the_queue_depth_cache_is_the_one_exported(observer: Observer) -> None:
    """A scrape reads queue depths through the exported queue_status cache: a miss, then a hit."""
    def figure(name: str) -> float:
        page = parse_text(observer.exposition.render(False).decode())
        return next(s.value for family in page for s in family.samples
                    if s.name == name and s.labels.get("cache") == "queue_status")

    assert figure("celery_observe_cache_misses_total") == 0  # read before this scrape's lookup
    assert figure("celery_observe_cache_misses_total") == 1
    assert figure("celery_observe_cache_hits_total") == 1
