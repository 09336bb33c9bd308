"""Queueing task messages on Redis in bulk, and timing how fast a worker drains them."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import redis

from benchmarks.common import Worker, client_app
from celery_observe.testing import wait_until

UNACKED = "unacked"  # kombu's Redis hash of delivered, not yet acknowledged messages


#: A generated task's modes, one per status: success, failure, retry (then success),
#: rejected, revoked (expired on arrival).
MODES = ("ok", "fail", "retry", "reject", "expired")


class Publisher:
    """Queues task messages on Redis in bulk, in kombu's own wire format.

    kombu makes a new Redis client for every publish (~1 ms each here), too slow to queue
    20,000 tasks between runs. So kombu publishes one message per kind to a scratch queue;
    its JSON is the template, and each copy only gets fresh task id and delivery tag.
    Copies go out in one MULTI/EXEC, so the worker sees the whole batch at once.
    """

    def __init__(self, broker: str, queue: str) -> None:
        self.queue = queue
        self.app = client_app(broker, queue)
        self.redis = redis.Redis.from_url(broker)
        self._templates: dict[tuple[str, str], dict[str, Any]] = {}

    def template(self, mode: str = "noop") -> dict[str, Any]:
        """The message of ``bench.noop`` (``noop``) or of a generated task in ``mode``:
        ``ok``, ``fail``, ``retry``, ``reject`` or ``expired`` (revoked when it arrives)."""
        key = (self.queue, mode)
        if key not in self._templates:
            scratch = f"{self.queue}.template"
            options: dict[str, Any] = {"queue": scratch}
            if mode == "noop":
                name, kwargs = "bench.noop", {}
            else:
                name = "bench.named_0000"
                kwargs = {"mode": "ok" if mode == "expired" else mode}
                if mode == "expired":
                    options["expires"] = datetime.now(timezone.utc) - timedelta(hours=1)
            self.app.send_task(name, kwargs=kwargs, **options)
            raw = cast("bytes | None", self.redis.rpop(scratch))
            if raw is None:
                raise RuntimeError(f"no template message arrived in {scratch!r}")
            message = json.loads(raw)
            # Retries are sent where the original was delivered: the real queue.
            message["properties"]["delivery_info"]["routing_key"] = self.queue
            self._templates[key] = message
        return self._templates[key]

    def messages(self, count: int, mode: str = "noop",
                 names: Sequence[str] | None = None) -> list[bytes]:
        """``count`` fresh copies; with ``names``, the task name cycles through them."""
        template = self.template(mode)
        out = []
        for index in range(count):
            task_id = str(uuid.uuid4())
            headers = {**template["headers"], "id": task_id, "root_id": task_id}
            if names:
                headers["task"] = names[index % len(names)]
            properties = {**template["properties"], "correlation_id": task_id,
                          "delivery_tag": str(uuid.uuid4())}
            out.append(json.dumps({**template, "headers": headers,
                                   "properties": properties}).encode())
        return out

    def push(self, payloads: Sequence[bytes], chunk: int = 1000) -> None:
        """All of ``payloads`` in one transaction, oldest first out."""
        pipe = self.redis.pipeline(transaction=True)
        for start in range(0, len(payloads), chunk):
            pipe.lpush(self.queue, *payloads[start:start + chunk])
        pipe.execute()

    def backlog(self) -> tuple[int, int]:
        """(messages waiting in the queue, messages delivered but not acknowledged)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.queue)
        pipe.hlen(UNACKED)
        waiting, unacked = pipe.execute()
        return int(waiting), int(unacked)

    def wait_empty(self, timeout: float, settle: float = 0.3) -> None:
        """Wait until nothing waits or is unacknowledged, twice ``settle`` s apart
        (a retry is re-published a moment after its first run was acknowledged)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.backlog() == (0, 0):
                time.sleep(settle)
                if self.backlog() == (0, 0):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue {self.queue} not drained after {timeout:g} s: "
                                   f"{self.backlog()}")
            time.sleep(0.05)

    def purge(self, timeout: float = 10.0) -> None:
        """Drop what waits and let the worker finish what it took: a prefork worker told
        to stop while tasks still wait for it takes minutes to shut down (Celery 5.7)."""
        self.redis.delete(self.queue)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: self.backlog() == (0, 0), timeout, "the worker to settle")

    def close(self) -> None:
        self.redis.delete(self.queue, f"{self.queue}.template")
        self.redis.close()
        self.app.close()


@dataclass
class Drain:
    """One drain: how many tasks, in how long, at what CPU cost to the main process."""

    tasks: int
    seconds: float
    main_cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds

    @property
    def cpu_us_per_task(self) -> float:
        return self.main_cpu_seconds / self.tasks * 1e6


def measure_drain(publisher: Publisher, worker: Worker, payloads: Sequence[bytes],
                  timeout: float = 600.0, interval: float = 0.02) -> Drain:
    """Queue ``payloads`` on the running, idle worker at once and time how fast it empties them.

    Watches only Redis (LLEN of the queue, HLEN of kombu's unacked hash) and the worker's
    CPU counters, so the plain worker, the observed one and the one sending events are
    measured the same way and none of them is asked anything. The batch lands in one
    MULTI/EXEC, so the clock starts when that returns (the worker, blocked in BRPOP, takes
    the first message at once); it stops at the first poll where none waits and none is
    unacknowledged. Tasks are acknowledged as they start, so at most the pool's last
    tasks (a few microseconds each) still run then; polls are ``interval`` s apart.
    """
    process = worker.main_process()
    deadline = time.monotonic() + timeout
    publisher.push(payloads)
    started = time.perf_counter()
    cpu = process.cpu_times()
    cpu_started = cpu.user + cpu.system
    while True:
        time.sleep(interval)
        waiting, unacked = publisher.backlog()
        if waiting == 0 and unacked == 0:
            seconds = time.perf_counter() - started
            cpu = process.cpu_times()
            return Drain(len(payloads), seconds, cpu.user + cpu.system - cpu_started)
        if worker.process is not None and worker.process.poll() is not None:
            raise RuntimeError(f"worker died during the drain:\n{worker.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"drain not finished after {timeout:g} s: {waiting} waiting")
