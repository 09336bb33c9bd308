"""The observe_* remote commands' argument checks and error replies, called directly.

Celery's ``inspect_command``/``control_command`` register a handler and return it unchanged,
so ``control.observe_history(state, limit=5)`` runs what a broadcast would run. ``state``
is a fake whose ``consumer.controller.celery_observe`` is a fake observer built on the real
CacheSet, TaskHistory and FaultLog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from celery.worker.control import Panel
from prometheus_client import CollectorRegistry, Counter

from celery_observe.faults import FaultLog
from celery_observe.named_caches import CacheSet
from celery_observe.worker import control
from celery_observe.worker.history import FinishedTask, TaskHistory

STATUS = {"hostname": "w1@a", "pool": "prefork"}
HEALTH = {"hostname": "w1@a", "alive": True, "ready": True}
TASKS: dict[str, list[Any]] = {"active": [], "reserved": [], "scheduled": []}
CACHE_NAMES = "task_status, worker_status, queue_status, metrics_summary, health_check"


class FakeObserver:
    """What the handlers use of an Observer; ``broken`` makes status/health/tasks raise it."""

    def __init__(self, broken: Exception | None = None) -> None:
        self.caches = CacheSet(clock=lambda: 1000.0)  # a still clock: cache ages are 0.0
        self.history = TaskHistory(10)
        for i in range(12):  # two more than it keeps
            self.history.append(FinishedTask(f"t{i}", "proj.add", "success", 99.5 + i,
                                             100.0 + i, None))
        self.registry = CollectorRegistry()
        self.faults = FaultLog(Counter("faults", "Faults.", ["component"],
                                       registry=self.registry))
        self.broken = broken

    def mask(self, text: str) -> str:
        return text

    def _answer(self, value: Any) -> Any:
        if self.broken is not None:
            raise self.broken
        return value

    def status(self) -> dict[str, Any]:
        return dict(self._answer(STATUS))

    def health(self) -> dict[str, Any]:
        return dict(self._answer(HEALTH))

    def tasks(self) -> dict[str, list[Any]]:
        return dict(self._answer(TASKS))

    def faults_counted(self, component: str) -> float | None:
        return self.registry.get_sample_value("faults_total", {"component": component})


def state_of(observer: Any) -> Any:
    return SimpleNamespace(consumer=SimpleNamespace(controller=SimpleNamespace(
        celery_observe=observer)))


@pytest.fixture
def observer() -> FakeObserver:
    return FakeObserver()


def test_the_decorators_return_the_registered_handler() -> None:
    """Each observe_* name is registered with Celery as the very function control exports."""
    names = ["observe_status", "observe_health", "observe_tasks", "observe_history",
             "observe_summary", "observe_cache_stats", "observe_cache_invalidate"]
    assert [Panel.data[name] for name in names] == [getattr(control, n) for n in names]


@pytest.mark.parametrize("value", ["true", "TRUE ", "yes", "on", "1", 1, True],
                         ids=["true", "TRUE-padded", "yes", "on", "str-1", "int-1", "True"])
def test_use_cache_accepted_true(observer: FakeObserver, value: Any) -> None:
    """A true use_cache computes once (MISS), then answers from the cache (HIT, age 0)."""
    state = state_of(observer)
    assert [control.observe_status(state, use_cache=value) for _ in range(2)] == [
        {"cache": "MISS", "cache_age_seconds": None, "data": STATUS},
        {"cache": "HIT", "cache_age_seconds": 0.0, "data": STATUS}]


@pytest.mark.parametrize("value", ["false", "no", "off", "0", "", 0, False],
                         ids=["false", "no", "off", "str-0", "empty", "int-0", "False"])
def test_use_cache_accepted_false(observer: FakeObserver, value: Any) -> None:
    """A false use_cache bypasses the cache and leaves nothing in it."""
    assert control.observe_status(state_of(observer), use_cache=value) == {
        "cache": "BYPASS", "data": STATUS}
    assert observer.caches.get("worker_status").get("status") is None


@pytest.mark.parametrize(("value", "quoted"), [
    ("maybe", "'maybe'"), (1.5, "1.5"), (2, "2"), (None, "None"), ([True], "[True]"),
    ("x" * 1_000_000, "'xxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxx'"),
], ids=["maybe", "float", "int-2", "None", "list", "1MB-string"])
def test_use_cache_refused(observer: FakeObserver, value: Any, quoted: str) -> None:
    """Anything not true or false is an error reply quoting the value in at most 40 chars."""
    assert control.observe_status(state_of(observer), use_cache=value) == {
        "error": f"observe_status: use_cache must be true or false, not {quoted}"}
    assert len(quoted) <= 40


@pytest.mark.parametrize(("handler", "cache_name", "data"), [
    (control.observe_status, "worker_status", STATUS),
    (control.observe_health, "health_check", HEALTH),
    (control.observe_tasks, "task_status", TASKS),
    (control.observe_summary, "metrics_summary", None),
], ids=["status", "health", "tasks", "summary"])
def test_each_command_has_its_own_cache(observer: FakeObserver, handler: Callable[..., Any],
                                        cache_name: str, data: Any) -> None:
    """Each cached command answers its own data, stored in the cache of its kind."""
    expected = observer.history.summary() if data is None else data
    assert handler(state_of(observer)) == {"cache": "MISS", "cache_age_seconds": None,
                                           "data": expected}
    assert observer.caches.get(cache_name).get_stats()["sets"] == 1


@pytest.mark.parametrize(("limit", "ids"), [
    (1, ["t11"]), (3, ["t11", "t10", "t9"]), ("2", ["t11", "t10"]), (2.0, ["t11", "t10"]),
    (10, [f"t{i}" for i in range(11, 1, -1)]),
], ids=["one", "three", "numeric-string", "whole-float", "size"])
def test_history_limit_accepted(observer: FakeObserver, limit: Any, ids: list[str]) -> None:
    """A limit from 1 to the history's size answers that many entries, newest first."""
    reply = control.observe_history(state_of(observer), limit=limit)
    assert [entry["id"] for entry in reply["data"]] == ids


def test_history_entries_are_plain_dicts(observer: FakeObserver) -> None:
    """observe_history answers each entry as FinishedTask.as_dict() does."""
    assert control.observe_history(state_of(observer), limit=1) == {"data": [
        {"id": "t11", "name": "proj.add", "state": "success", "started": 110.5,
         "ended": 111.0, "error_type": None, "duration_seconds": 0.5}]}


@pytest.mark.parametrize(("limit", "quoted"), [
    (11, "11"), (0, "0"), (-1, "-1"), (1.5, "1.5"), ("many", "'many'"), (True, "True"),
    (None, "None"), (10**30, "1000000000000000000000000000000"),
    ("9" * 1_000_000, "'99999999999999999...999999999999999999'"),
], ids=["size+1", "zero", "negative", "fraction", "word", "bool", "None", "10**30",
        "1MB-string"])
def test_history_limit_refused(observer: FakeObserver, limit: Any, quoted: str) -> None:
    """Any other limit is an error reply naming the range and quoting at most 40 chars."""
    assert control.observe_history(state_of(observer), limit=limit) == {
        "error": f"observe_history: limit must be a whole number from 1 to 10, not {quoted}"}
    assert len(quoted) <= 40


def test_cache_invalidate_a_known_cache(observer: FakeObserver) -> None:
    """observe_cache_invalidate with a cache's name empties that cache only."""
    state = state_of(observer)
    control.observe_tasks(state)
    control.observe_status(state)
    assert control.observe_cache_invalidate(state, cache_name="task_status") == {
        "ok": "invalidated 1 entries", "cache_name": "task_status"}
    assert control.observe_status(state)["cache"] == "HIT"


@pytest.mark.parametrize("cache_name", [None, ""], ids=["none", "empty"])
def test_cache_invalidate_all(observer: FakeObserver, cache_name: str | None) -> None:
    """Without a name (or with an empty one) every cache is emptied."""
    state = state_of(observer)
    control.observe_tasks(state)
    control.observe_status(state)
    assert control.observe_cache_invalidate(state, cache_name=cache_name) == {
        "ok": "invalidated 2 entries", "cache_name": "all"}


def test_cache_invalidate_unknown_name_lists_the_valid_ones(observer: FakeObserver) -> None:
    """An unknown cache name is an error reply listing the valid names."""
    assert control.observe_cache_invalidate(state_of(observer), cache_name="nope") == {
        "error": f"observe_cache_invalidate: unknown cache name 'nope'; valid names are: "
                 f"{CACHE_NAMES}"}


def test_cache_invalidate_quotes_a_long_unknown_name_short(observer: FakeObserver) -> None:
    """An unknown cache name of 1 MB gets an error reply of normal length."""
    reply = control.observe_cache_invalidate(state_of(observer), cache_name="n" * 1_000_000)
    assert len(reply["error"]) < 300


@pytest.mark.parametrize(("cache_name", "quoted"), [(5, "5"), (["task_status"],
                                                               "['task_status']")],
                         ids=["int", "list"])
def test_cache_invalidate_non_string(observer: FakeObserver, cache_name: Any,
                                     quoted: str) -> None:
    """A cache_name that is not a string is an error reply quoting it."""
    assert control.observe_cache_invalidate(state_of(observer), cache_name=cache_name) == {
        "error": f"observe_cache_invalidate: cache_name must be the name of a cache, not {quoted}"}


def test_cache_stats(observer: FakeObserver) -> None:
    """observe_cache_stats answers the CacheSet's statistics."""
    assert control.observe_cache_stats(state_of(observer)) == {"data": observer.caches.stats()}


@pytest.mark.parametrize("state", [
    None, SimpleNamespace(), SimpleNamespace(consumer=None),
    SimpleNamespace(consumer=SimpleNamespace(controller=SimpleNamespace())),
], ids=["no-state", "no-consumer", "consumer-none", "no-observer"])
@pytest.mark.parametrize("handler", [control.observe_status, control.observe_history,
                                     control.observe_cache_invalidate],
                         ids=["status", "history", "invalidate"])
def test_worker_without_celery_observe(state: Any, handler: Callable[..., Any]) -> None:
    """A worker started without --observe answers that it is not observed."""
    assert handler(state) == {"error": control.NOT_OBSERVED}


def test_fault_in_the_observer_is_a_generic_error_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    """A RuntimeError inside the worker: a generic error reply, each one counted, logged once."""
    observer = FakeObserver(broken=RuntimeError("secret detail"))
    state = state_of(observer)
    with caplog.at_level(logging.ERROR, logger="celery_observe"):
        replies = [control.observe_status(state, use_cache=False) for _ in range(2)]
    assert replies == [{"error": "observe_status failed inside the worker; see its log"}] * 2
    assert observer.faults_counted("control observe_status") == 2
    assert [r.getMessage().count("secret detail") for r in caplog.records] == [1]


def test_type_error_inside_the_observer_is_a_fault() -> None:
    """A TypeError raised by observer.status() is counted as a fault, not shown as bad input."""
    observer = FakeObserver(broken=TypeError("'NoneType' object is not subscriptable"))
    reply = control.observe_status(state_of(observer))
    assert (reply, observer.faults_counted("control observe_status")) == (
        {"error": "observe_status failed inside the worker; see its log"}, 1)
