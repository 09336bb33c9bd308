"""Health decisions as pure functions of a snapshot, so every rule is testable on its own.

Liveness answers "should this process be restarted?": only a main loop that stopped
ticking says yes. Readiness answers "is this worker taking tasks from the broker now?".
Neither makes a broker round-trip: they read state the worker keeps anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .shapes import QueueReport


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
        reason = "the worker's consumer has not started yet"
    elif not connected:
        reason = "the worker is not connected to the broker (reconnecting)"
    elif not consuming:
        reason = "the worker is connected but not consuming its queues"
    else:
        return ProbeResult(True, {"status": "ready"})
    return ProbeResult(False, {"status": "not ready", "reason": reason})


HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
#: Exit codes of ``celery observe health``, for exec probes and scripts.
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}


def cluster_health(*, workers: dict[str, dict[str, Any]], missing: list[str],
                   queues: dict[str, QueueReport], broker_error: str | None,
                   queue_threshold: int, start_command: str) -> dict[str, Any]:
    """The monitoring seed's verdict on a cluster: healthy, degraded or unhealthy.

    Unhealthy: the broker cannot be reached, or no worker answers (tasks cannot run).
    Degraded: tasks run, but a queue is deeper than ``queue_threshold``, a queue holds
    messages no worker consumes, a worker that answered before is silent, or a worker
    reports itself not alive or not ready.
    """
    problems: list[str] = []
    recommendations: list[str] = []
    if broker_error is not None:
        status = UNHEALTHY
        problems.append(f"the broker cannot be reached: {broker_error}")
        recommendations.append("Check that the broker (Redis/RabbitMQ) is running and reachable "
                               "with the app's broker_url")
    elif not workers:
        status = UNHEALTHY
        problems.append("No active Celery workers found")
        recommendations.append(f"Start Celery workers: {start_command}")
    else:
        status = HEALTHY
        for name, queue in sorted(queues.items()):
            depth = queue["length"]
            if queue["unconsumed"]:
                problems.append(f"queue {name!r} holds {depth} tasks and no worker consumes it")
                recommendations.append(
                    f"Start a worker that consumes {name!r}: {start_command} -Q {name}")
            elif depth is not None and depth > queue_threshold:
                problems.append(f"queue {name!r} holds {depth} tasks (threshold {queue_threshold})")
                recommendations.append(f"Add workers consuming {name!r} or investigate slow tasks")
        for hostname in sorted(missing):
            problems.append(f"worker {hostname} stopped answering")
            recommendations.append(f"Check the logs of {hostname}; restart it if it is gone")
        for hostname, report in sorted(workers.items()):
            if not report.get("alive", True):
                problems.append(f"worker {hostname} is stuck: "
                                f"{report.get('liveness', {}).get('reason', 'no loop ticks')}")
                recommendations.append(f"Restart {hostname}")
            elif not report.get("ready", True):
                problems.append(f"worker {hostname} is not ready: "
                                f"{report.get('readiness', {}).get('reason', 'unknown')}")
        if problems:
            status = DEGRADED
    message = "All systems operational" if not problems else "; ".join(problems)
    return {
        "status": status,
        "message": message,
        "broker_connected": broker_error is None,
        "workers": {
            "healthy": bool(workers) and broker_error is None,
            "active_workers": sorted(workers),
            "worker_count": len(workers),
            **({"error": problems[0]} if status == UNHEALTHY else {}),
        },
        "queues": {name: -1 if queue["length"] is None else queue["length"]
                   for name, queue in sorted(queues.items())},
        "unconsumed_queues": sorted(name for name, queue in queues.items() if queue["unconsumed"]),
        "recommendations": recommendations,
    }
