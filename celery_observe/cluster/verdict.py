"""The cluster's health verdict, a pure function of what the workers and the broker said.

The monitoring seed's three states, each problem with its recommendation, so a probe, the
CLI and the API answer alike; every rule is testable without a broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ..shapes import HealthWorkers, QueueReport, Verdict, VerdictStatus, WorkerHealth

HEALTHY: Final = "healthy"
DEGRADED: Final = "degraded"
UNHEALTHY: Final = "unhealthy"
#: Exit codes of ``celery observe health``, for exec probes and scripts.
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}


def cluster_health(*, workers: Mapping[str, WorkerHealth], missing: list[str],
                   queues: dict[str, QueueReport], broker_error: str | None,
                   queue_threshold: int, start_command: str) -> Verdict:
    """The monitoring seed's verdict on a cluster: healthy, degraded or unhealthy.

    Unhealthy: the broker cannot be reached, or no worker answers (tasks cannot run).
    Degraded: tasks run, but a queue is deeper than ``queue_threshold``, a queue holds
    messages no worker consumes, a worker that answered before is silent, or a worker
    reports itself not alive or not ready.
    """
    problems: list[str] = []
    recommendations: list[str] = []
    status: VerdictStatus
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
    health_workers = HealthWorkers(healthy=bool(workers) and broker_error is None,
                                   active_workers=sorted(workers), worker_count=len(workers))
    if status == UNHEALTHY:
        health_workers["error"] = problems[0]
    return Verdict(
        status=status,
        message=message,
        broker_connected=broker_error is None,
        workers=health_workers,
        queues={name: -1 if queue["length"] is None else queue["length"]
                for name, queue in sorted(queues.items())},
        unconsumed_queues=sorted(name for name, queue in queues.items() if queue["unconsumed"]),
        recommendations=recommendations,
    )
