"""Cluster refuses bad arguments at construction, naming each, with no broker involved."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from celery_observe import Cluster


@pytest.mark.parametrize(("arguments", "message"), [
    ({"timeout": 0}, "Cluster(timeout=...) must be a number of seconds greater than 0, got 0"),
    ({"discovery_timeout": True}, "Cluster(discovery_timeout=...) must be a number of seconds "
                                  "greater than 0, got True"),
    ({"forget_after": float("inf")}, "Cluster(forget_after=...) must be a number of seconds "
                                     "greater than 0, got inf"),
    ({"timeout": "1"}, "Cluster(timeout=...) must be a number of seconds greater than 0, "
                       "got '1'"),
    ({"queue_threshold": -1}, "Cluster(queue_threshold=...) must be an integer of at least 0, "
                              "got -1"),
    ({"queue_threshold": 1.5}, "Cluster(queue_threshold=...) must be an integer of at least "
                               "0, got 1.5"),
])
def test_bad_argument_is_refused_by_name(arguments: dict[str, Any], message: str) -> None:
    """Each bad value raises ValueError with the argument's name and the value."""
    with pytest.raises(ValueError) as refused:
        Cluster(Celery(set_as_current=False), **arguments)
    assert str(refused.value) == message


def test_good_arguments_are_kept() -> None:
    """Accepted values are stored as given (ints as seconds become floats)."""
    cluster = Cluster(Celery(set_as_current=False), timeout=2, discovery_timeout=0.5,
                      forget_after=30, queue_threshold=0)
    assert (cluster.timeout, cluster.discovery_timeout, cluster.forget_after,
            cluster.queue_threshold) == (2.0, 0.5, 30.0, 0)
