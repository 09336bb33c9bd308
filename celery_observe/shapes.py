"""The shapes of what crosses a process boundary: remote-command replies and client answers.

One module, so the CLI, the cluster API's schema and the dashboard read the same
definitions as the code that builds them.
"""

from __future__ import annotations

from typing import TypedDict


class QueueReport(TypedDict):
    """One queue as a client sees it: its depth and who consumes it."""

    #: Messages waiting (Redis: every priority); None when the broker could not be asked.
    length: int | None
    #: Messages per kombu priority step, Redis only.
    by_priority: dict[str, int]
    #: Age of the next message to be consumed, when its producer stamped a publish time.
    oldest_message_age_seconds: float | None
    #: The workers that answered and consume this queue.
    consumers: list[str]
    #: Messages wait and no worker that answered consumes the queue: they will not run.
    unconsumed: bool
