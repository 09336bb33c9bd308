"""Figure 2: liveness probe latency, ``GET /healthz`` vs ``celery inspect ping``.

The worker is kept busy: a feeder thread keeps no-op tasks waiting in its queue, so the
main process is as loaded as it gets (the HTTP thread competes with it for the GIL). The
exec probe is run as Kubernetes runs one: a new ``celery -A app inspect ping`` process per
probe, once as commonly written (no destination: waits its full 1 s timeout) and once with
``-d worker`` (returns at the first reply). Probes alternate one by one.
"""

from __future__ import annotations

import threading

from benchmarks.common import (
    Context,
    Worker,
    bench_env,
    celery_command,
    http_get,
    log,
    running,
    time_command,
)
from benchmarks.queueing import (
    Publisher,
)
from benchmarks.results import (
    Row,
    median,
)

HEALTHZ_GOAL_MS = 5.0
RATIO_GOAL = 200.0


class Feeder:
    """Keeps between ``low`` and ``low + batch`` no-op tasks waiting, on a thread."""

    def __init__(self, publisher: Publisher, low: int = 2000, batch: int = 2000) -> None:
        self.publisher, self.low, self.batch = publisher, low, batch
        self.pushed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-feeder", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.publisher.backlog()[0] < self.low:
                self.publisher.push(self.publisher.messages(self.batch))
                self.pushed += self.batch
            self._stop.wait(0.1)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


def run(ctx: Context) -> list[Row]:
    rounds = 1 if ctx.quick else 10
    per_round = 5 if ctx.quick else 20
    queue = ctx.unique("probe")
    publisher = Publisher(ctx.redis, queue)
    worker = Worker(ctx.redis, queue, "prefork", 2, observe=True, hostname=f"{queue}@localhost")
    env = bench_env(ctx.redis, queue, 0)
    ping = celery_command("inspect", "ping")
    ping_d = celery_command("inspect", "ping", "-d", worker.hostname)
    healthz: list[float] = []
    pings: list[float] = []
    pings_d: list[float] = []
    bad: list[str] = []
    try:
        with running(worker):
            with Feeder(publisher) as feeder:
                for number in range(rounds):
                    for _ in range(per_round):
                        status, _body, seconds, _headers = http_get(worker.port, "/healthz")
                        healthz.append(seconds * 1000)
                        if status != 200:
                            bad.append(f"/healthz {status}")
                    for command, into in ((ping, pings), (ping_d, pings_d)):
                        seconds, code, output = time_command(command, env)
                        into.append(seconds * 1000)
                        if code != 0 or "pong" not in output:
                            bad.append(f"{' '.join(command[3:])} exit {code}")
                    log(f"fig 2 round {number + 1}/{rounds}: /healthz {median(healthz):.2f} ms, "
                        f"ping {pings[-1]:.0f} ms, ping -d {pings_d[-1]:.0f} ms")
            done = feeder.pushed - sum(publisher.backlog())
            publisher.purge()
    finally:
        publisher.close()
    base = median(healthz)
    busy = f"worker busy throughout: {done} no-op tasks done during the probes"
    rows = [
        Row(2, "GET /healthz (busy prefork -c 2 worker)", "ms", healthz, 1.0, "/healthz",
            f"p50 < {HEALTHZ_GOAL_MS:g} ms", base < HEALTHZ_GOAL_MS,
            busy + (f"; failures: {sorted(set(bad))}" if bad else "")),
        Row(2, "celery -A app inspect ping (subprocess)", "ms", pings, median(pings) / base,
            "/healthz", f"≥ {RATIO_GOAL:g}x /healthz", median(pings) / base >= RATIO_GOAL,
            "waits its whole 1 s reply timeout"),
        Row(2, "celery -A app inspect ping -d WORKER (subprocess)", "ms", pings_d,
            median(pings_d) / base, "/healthz", f"≥ {RATIO_GOAL:g}x /healthz",
            median(pings_d) / base >= RATIO_GOAL,
            "returns at the first reply: process start-up and imports remain"),
    ]
    return rows
