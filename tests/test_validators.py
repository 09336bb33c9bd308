"""The one set of argument validators (config.py) and each class that checks with it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from celery_observe.cache import MetricsCache
from celery_observe.cardinality import BoundedLabel
from celery_observe.config import at_least, positive_seconds
from celery_observe.faults import FaultLog
from celery_observe.queues import QueueReader
from celery_observe.worker.resources import ResourceMonitor

SECONDS_REFUSED = [0, 0.0, -1, -0.5, True, False, "1", math.nan, math.inf, -math.inf]


@pytest.mark.parametrize(("value", "expected"), [(1, 1.0), (0.001, 0.001), (30.0, 30.0),
                                                 (10**6, 1e6)])
def test_positive_seconds_accepts_finite_numbers_above_zero(value: Any,
                                                            expected: float) -> None:
    """An int or float that is finite and above 0 is returned as a float."""
    result = positive_seconds("ttl", value)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize("value", [*SECONDS_REFUSED, None], ids=repr)
def test_positive_seconds_refuses_the_rest_naming_the_argument(value: Any) -> None:
    """0, negatives, booleans, text, None, nan and infinities raise a ValueError naming it."""
    with pytest.raises(ValueError) as info:
        positive_seconds("ttl", value)
    assert str(info.value) == f"ttl must be a number of seconds greater than 0, got {value!r}"


@pytest.mark.parametrize(("minimum", "value"), [(1, 1), (1, 1000), (0, 0), (-3, -3)])
def test_at_least_accepts_integers_from_the_minimum(minimum: int, value: int) -> None:
    """An int at or above the minimum is returned as it is."""
    assert at_least("max_size", minimum, value) == value


@pytest.mark.parametrize(("minimum", "value"), [
    (1, 0), (1, -1), (0, -1), (1, True), (0, False), (1, 2.0), (1, 2.5), (1, "1"),
    (1, None), (1, math.nan), (1, math.inf),
], ids=repr)
def test_at_least_refuses_the_rest_naming_the_argument(minimum: int, value: Any) -> None:
    """Smaller ints, booleans, floats (whole or not), text, None raise a ValueError naming it."""
    with pytest.raises(ValueError) as info:
        at_least("max_size", minimum, value)
    assert str(info.value) == (f"max_size must be an integer of at least {minimum}, "
                               f"got {value!r}")


def _cache_ttl(value: Any) -> object:
    return MetricsCache(default_ttl=value)


def _cache_set_ttl(value: Any) -> object:
    cache = MetricsCache()
    cache.set("k", 1, ttl=value)
    return cache


def _cache_cleanup(value: Any) -> object:
    return MetricsCache(cleanup_interval=value)


def _queue_timeout(value: Any) -> object:
    return QueueReader(Celery(set_as_current=False), FaultLog(), timeout=value)


def _resource_interval(value: Any) -> object:
    return ResourceMonitor(list, FaultLog(), interval=value)


SECONDS_ARGUMENTS: dict[str, tuple[str, Callable[[Any], object]]] = {
    "MetricsCache default_ttl": ("default_ttl", _cache_ttl),
    "MetricsCache.set ttl": ("ttl", _cache_set_ttl),
    "MetricsCache cleanup_interval": ("cleanup_interval", _cache_cleanup),
    "QueueReader timeout": ("timeout", _queue_timeout),
    "ResourceMonitor interval": ("interval", _resource_interval),
}


@pytest.mark.parametrize("value", SECONDS_REFUSED, ids=repr)
@pytest.mark.parametrize("where", sorted(SECONDS_ARGUMENTS))
def test_every_seconds_argument_refuses_what_positive_seconds_refuses(where: str,
                                                                      value: Any) -> None:
    """Each class's seconds argument is checked by positive_seconds: same refusals, message."""
    name, build = SECONDS_ARGUMENTS[where]
    with pytest.raises(ValueError) as info:
        build(value)
    assert str(info.value) == f"{name} must be a number of seconds greater than 0, got {value!r}"


@pytest.mark.parametrize("where", sorted(SECONDS_ARGUMENTS))
def test_every_seconds_argument_accepts_a_positive_int(where: str) -> None:
    """A whole number of seconds given as an int is accepted everywhere."""
    SECONDS_ARGUMENTS[where][1](2)


@pytest.mark.parametrize("value", [0, -1, True, 1.5, 2.0, "1", math.nan, math.inf], ids=repr)
def test_cache_max_size_refuses_what_at_least_refuses(value: Any) -> None:
    """MetricsCache's max_size is an int of at least 1."""
    with pytest.raises(ValueError) as info:
        MetricsCache(max_size=value)
    assert str(info.value) == f"max_size must be an integer of at least 1, got {value!r}"


@pytest.mark.parametrize("value", [0, -1, True, 1.5, 2.0, "1", math.nan, math.inf], ids=repr)
def test_bounded_label_max_values_refuses_what_at_least_refuses(value: Any) -> None:
    """BoundedLabel's max_values is an int of at least 1; the message names the label."""
    with pytest.raises(ValueError) as info:
        BoundedLabel("task_name", value)
    assert str(info.value) == ("BoundedLabel('task_name'): max_values must be an integer of "
                               f"at least 1, got {value!r}")


def test_bounded_label_takes_one_value() -> None:
    """max_values=1 is the smallest cap: the first value is kept, the next is 'other'."""
    label = BoundedLabel("task_name", 1)
    assert (label("a"), label("b")) == ("a", "other")
