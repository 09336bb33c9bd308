"""One broadcast and its replies: stop when the expected workers replied, after a grace.

kombu's ``broadcast(limit=N)`` stops at the N-th reply, so a worker that joined since the
last call is found only if it happens to answer before one of the N known ones; with one
known worker, half the time. Every worker gets the command at the same moment, so a
newcomer answers about as fast as the known ones: after the last expected reply this waits
as long again (at least :data:`MIN_GRACE`) for replies from workers no one expected.
"""

from __future__ import annotations

import time
from typing import Any

from kombu.exceptions import ChannelError
from kombu.messaging import Consumer
from kombu.transport.virtual import Channel as PollingChannel
from kombu.utils.uuid import uuid

#: The shortest wait for newcomers once every expected worker replied.
MIN_GRACE = 0.005


def broadcast(app: Any, connection: Any, command: str, arguments: dict[str, Any],
              expected: set[str], timeout: float) -> dict[str, Any]:
    """Send ``command`` to every worker of ``app``; the reply of each that answered in time.

    With no ``expected`` workers it collects for the whole ``timeout``; otherwise until all
    of them replied (or ``timeout``), then for the grace.
    """
    node = app.control.mailbox(connection)
    channel = connection.default_channel
    ticket = uuid()
    replies: dict[str, Any] = {}

    def on_message(body: Any, message: Any) -> None:
        expires = message.headers.get("expires")
        if message.headers.get("ticket") == ticket and not (expires and time.time() > expires):
            replies.update(body)

    # As kombu's own _broadcast: publishing declares the reply queue (an auto-delete queue
    # is never a cached declaration), the collection deletes it, so nothing stays behind.
    node._publish(command, arguments, reply_ticket=ticket, channel=channel, timeout=timeout)
    queue = node.reply_queue
    consumer = Consumer(channel, [queue], accept=node.accept, no_ack=True,  # type: ignore[no-untyped-call]
                        callbacks=[on_message])
    started = time.monotonic()
    end = started + timeout
    try:
        with consumer:
            while (now := time.monotonic()) < end:
                if expected and expected <= replies.keys():
                    grace = min(max(now - started, MIN_GRACE), end - now)
                    if isinstance(channel, PollingChannel):
                        _collect_waiting(connection, channel, queue.name, grace)
                        break
                    end = now + grace
                    expected = set()  # the grace starts once
                try:
                    connection.drain_events(timeout=end - now)
                except TimeoutError:
                    break
    finally:
        channel.after_reply_message_received(queue.name)
    return replies


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
