"""One broadcast and its replies: stop when every listener replied, or the expected
workers replied and a grace passed.

On Redis the broker says how many listen: PUBLISH returns the number of subscribers it
reached (pattern subscribers included, and every worker's pidbox is one), so the collection
stops at exactly that many replies, and a fresh client that knows no workers need not wait
out a discovery timeout. Where the broker cannot say (RabbitMQ has no count of a fanout
exchange's receivers), the expected workers are the ones that replied before or that a hint
names (see :mod:`.hints`, checked by :func:`live_workers`).

kombu's ``broadcast(limit=N)`` stops at the N-th reply, so a worker that joined since the
last call is found only if it happens to answer before one of the N known ones; with one
known worker, half the time. Every worker gets the command at the same moment, so a
newcomer answers about as fast as the known ones: after the last expected reply this waits
as long again (at least :data:`MIN_GRACE`) for replies from workers no one expected.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kombu.exceptions import ChannelError
from kombu.messaging import Consumer, Producer
from kombu.transport.virtual import Channel as PollingChannel
from kombu.utils.json import dumps
from kombu.utils.uuid import uuid

#: The shortest wait for newcomers once every expected worker replied.
MIN_GRACE = 0.005
#: AMQP's reply code for a queue that another connection holds exclusively.
RESOURCE_LOCKED = 405


def broadcast(app: Any, connection: Any, command: str, arguments: dict[str, Any],
              expected: set[str], timeout: float, discovery_timeout: float) -> dict[str, Any]:
    """Send ``command`` to every worker of ``app``; the reply of each that answered in time.

    It collects until as many replies came as the broker counted listeners (Redis), or
    until every ``expected`` worker replied and then for the grace, or for ``timeout``,
    whichever ends first. Expecting no one, it collects for ``discovery_timeout``; when it
    counted listeners but expects none by name, it goes on while replies keep coming and
    stops once none came for ``discovery_timeout`` (a listener that never replies, such as
    a debugging PSUBSCRIBE, costs that much and not a ``timeout``).
    """
    node = app.control.mailbox(connection)
    channel = connection.default_channel
    ticket = uuid()
    replies: dict[str, Any] = {}
    # who replied to this ticket, late ones too: each is one listener done (by name, so a
    # reply that reaches us twice does not stand for a listener still to come)
    answered: set[str] = set()
    last_reply = 0.0  # when the latest came (monotonic); collecting starts it afresh

    def on_message(body: Any, message: Any) -> None:
        nonlocal last_reply
        if message.headers.get("ticket") != ticket:
            return
        answered.update(body if isinstance(body, dict) else ())
        last_reply = time.monotonic()
        expires = message.headers.get("expires")
        if not (expires and time.time() > expires):
            replies.update(body)

    # As kombu's own _broadcast: publishing declares the reply queue (an auto-delete queue
    # is never a cached declaration), the collection deletes it, so nothing stays behind.
    listeners = _publish(node, connection, channel, command, arguments, ticket, timeout)
    queue = node.reply_queue
    consumer = Consumer(channel, [queue], accept=node.accept, no_ack=True,  # type: ignore[no-untyped-call]
                        callbacks=[on_message])
    started = last_reply = time.monotonic()
    end = started + (timeout if expected or listeners else discovery_timeout)
    quiet = discovery_timeout if listeners and not expected else None
    try:
        with consumer:
            while (now := time.monotonic()) < end:
                if listeners is not None and len(answered) >= listeners:
                    break
                if expected and expected <= replies.keys():
                    grace = min(max(now - started, MIN_GRACE), end - now)
                    if isinstance(channel, PollingChannel):
                        _collect_waiting(connection, channel, queue.name, grace)
                        break
                    end = now + grace
                    expected = set()  # the grace starts once
                until = end if quiet is None else min(end, last_reply + quiet)
                if now >= until:
                    break
                try:
                    connection.drain_events(timeout=until - now)
                except TimeoutError:
                    break
    finally:
        channel.after_reply_message_received(queue.name)
    return replies


def _publish(node: Any, connection: Any, channel: Any, command: str,
             arguments: dict[str, Any], ticket: str, timeout: float) -> int | None:
    """Send the command; on Redis, how many subscribers it reached (None elsewhere).

    It goes out on this client's own channel, not a connection of Celery's producer pool
    (which the mailbox would use): one connection less to open. kombu's Redis channel
    publishes a fanout message in ``_put_fanout`` and drops PUBLISH's count, so for this
    one publish the channel's ``_put_fanout`` is one that keeps it.
    """
    def publish() -> None:
        node._publish(command, arguments, reply_ticket=ticket, channel=channel, timeout=timeout,
                      producer=Producer(channel, auto_declare=False))  # type: ignore[no-untyped-call]

    if connection.transport.driver_type != "redis":
        publish()
        return None
    reached: list[int] = []

    def put_fanout(exchange: str, message: Any, routing_key: str, **_options: Any) -> None:
        payload = dumps(message)  # type: ignore[no-untyped-call]
        with channel.conn_or_acquire() as client:
            # assigned whole, so a publish that kombu retries is not counted twice
            reached[:] = [client.publish(topic, payload)
                          for topic in channel._get_publish_topics(exchange, routing_key)]

    channel._put_fanout = put_fanout
    try:
        publish()
    finally:
        del channel._put_fanout
    return sum(reached) if reached else None


def checks_workers(app: Any) -> bool:
    """Whether :func:`live_workers` can tell who listens on ``app``'s broker (RabbitMQ)."""
    return bool(app.connection_for_read().transport.driver_type == "amqp")


def live_workers(app: Any, connection: Any, hostnames: Iterable[str]) -> set[str]:
    """Which of ``hostnames`` have a worker holding their pidbox queue (RabbitMQ only).

    A passive declare of ``<hostname>.<exchange>.pidbox`` answers in one round trip. Celery
    declares that queue exclusive, so while its worker's connection lives the broker refuses
    another connection with 405 RESOURCE_LOCKED (a non-exclusive one reports its consumers);
    a queue that is gone is a 404. Either refusal closes the channel, so the next check
    opens another.
    """
    mailbox = app.control.mailbox(connection)
    live: set[str] = set()
    channel = None
    try:
        for hostname in hostnames:
            if channel is None:
                channel = connection.channel()
            try:
                declared = channel.queue_declare(queue=mailbox.get_queue(hostname).name,
                                                 passive=True)
            except connection.channel_errors as refused:
                channel = None  # the broker closed it
                if getattr(refused, "code", None) == RESOURCE_LOCKED:
                    live.add(hostname)
                continue
            if declared.consumer_count:
                live.add(hostname)
    finally:
        if channel is not None:
            channel.close()
    return live


def _collect_waiting(connection: Any, channel: Any, queue: str, grace: float) -> None:
    """The grace on a polling transport (Redis, filesystem): wait, then take what came.

    A poll that ends by timeout stays pending there, and holds up the next broadcast's
    first reply until it ends (50 ms on Redis): so count the replies that arrived and
    drain exactly those, which never waits.
    """
    time.sleep(grace)
    try:
        waiting = channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError:  # Redis keeps no empty list: no queue is an empty queue
        return
    for _ in range(waiting):
        connection.drain_events(timeout=grace)
