"""Which of the worker's queues a task came from, for ``celery_tasks_total{queue}``.

A request keeps only the exchange and routing key its message was published with
(``request.delivery_info``), not the queue the worker consumed it from. Those name the
queue in every ordinary setup (``send_task(queue=...)``, routes, the default queue: the
exchange and the routing key are the queue's name), and through a queue's declared
bindings otherwise. What names no queue this worker consumes is counted under ``other``
(and in ``celery_observe_dropped_label_values_total{label="queue"}``). So the label's values
are bounded by the queues the worker consumes, plus one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..cardinality import OVERFLOW

if TYPE_CHECKING:
    from celery import Celery
    from kombu.entity import Queue

#: (exchange, routing key) pairs remembered; past that they are resolved each time.
MAX_KEYS = 1000


def consumed_queues(app: Celery) -> Mapping[str, Queue]:
    """The queues a worker of ``app`` consumes (``-Q``, ``add_consumer``), by name."""
    queues: Mapping[str, Queue] = app.amqp.queues
    consumed: Mapping[str, Queue] | None = app.amqp.queues.consume_from
    return consumed or queues


def _routes(queue: Queue) -> Iterator[tuple[str | None, str | None]]:
    """The (exchange, routing key) pairs that put a message into ``queue``."""
    if queue.exchange is not None:  # None: the queue is reached through its bindings only
        yield queue.exchange.name, queue.routing_key
    for binding in queue.bindings or ():
        bound = binding.exchange
        yield (bound if isinstance(bound, str) else getattr(bound, "name", None),
               binding.routing_key)


def resolve(queues: Mapping[str, Queue], exchange: str | None,
            routing_key: str | None) -> str | None:
    """The one consumed queue that ``exchange`` and ``routing_key`` lead to, or None."""
    if exchange is None and routing_key is None:
        return None
    exact = [name for name, queue in queues.items()
             if (exchange, routing_key) in set(_routes(queue))]
    if exact:
        return exact[0] if len(exact) == 1 else None
    if routing_key in queues:  # the default exchange routes by queue name
        return routing_key
    via_exchange = {name for name, queue in queues.items()
                    if any(bound == exchange for bound, _ in _routes(queue))}
    return via_exchange.pop() if len(via_exchange) == 1 else None

class DeliveryQueues:
    """Maps a request's ``delivery_info`` to a consumed queue's name, or ``other``.

    Called in the worker's main process for every outcome, so a known pair costs one
    dict lookup; only pairs that resolve to a queue are remembered, so a queue added
    later with ``add_consumer`` is found when its messages arrive.
    """

    def __init__(self, queues: Callable[[], Mapping[str, Queue]]) -> None:
        self._queues = queues
        self._known: dict[tuple[Any, Any], str] = {}

    def __call__(self, delivery_info: Mapping[str, Any] | None) -> str:
        info = delivery_info or {}
        key = (info.get("exchange"), info.get("routing_key"))
        name = self._known.get(key)
        if name is None:
            name = resolve(self._queues(), *key)
            if name is None:
                return OVERFLOW
            if len(self._known) < MAX_KEYS:
                self._known[key] = name
        return name
