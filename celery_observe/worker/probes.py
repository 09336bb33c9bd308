"""The worker's probes as pure functions of a snapshot, so every rule is testable on its own.

Liveness answers "should this process be restarted?": only a main loop that stopped
ticking says yes. Readiness answers "is this worker taking tasks from the broker now?".
Neither makes a broker round-trip: they read state the worker keeps anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProbeResult:
    """The answer of a probe: HTTP 200 when ``ok``, else 503, with a JSON body."""

    ok: bool
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return 200 if self.ok else 503


def liveness(tick_age: float | None, timeout: float, *, inline_task_running: bool = False,
             reconnecting: bool = False) -> ProbeResult:
    """Alive while the worker's event loop ticked within ``timeout`` seconds.

    ``tick_age`` is None for workers without an event loop (brokers kombu polls, such as
    ``filesystem://``): they are alive as long as the process answers. Two waits stop the
    ticks without the worker being stuck: with the solo pool a task runs inside the loop
    (bound such tasks with a time limit), and while the broker is down the consumer waits
    between reconnect attempts; restarting the worker would help neither.
    """
    body: dict[str, Any] = {"status": "alive", "loop_tick_age_seconds": tick_age,
                            "timeout_seconds": timeout}
    if tick_age is None or tick_age <= timeout:
        return ProbeResult(True, body)
    if inline_task_running:
        body["reason"] = "the event loop is running a task (solo pool)"
        return ProbeResult(True, body)
    if reconnecting:
        body["reason"] = "the worker is waiting to reconnect to the broker"
        return ProbeResult(True, body)
    body["status"] = "stuck"
    body["reason"] = f"the worker's event loop has not ticked for {tick_age:.1f} s"
    return ProbeResult(False, body)


def readiness(*, started: bool, connected: bool, consuming: bool,
              shutting_down: bool) -> ProbeResult:
    """Ready when the consumer is connected to the broker and consuming task queues."""
    if shutting_down:
        reason = "the worker is shutting down"
    elif not started:
        reason = "the worker's consumer has not finished starting"
    elif not connected:
        reason = "the worker is not connected to the broker (reconnecting)"
    elif not consuming:
        reason = "the worker is connected but not consuming its queues"
    else:
        return ProbeResult(True, {"status": "ready"})
    return ProbeResult(False, {"status": "not ready", "reason": reason})
