"""Figure 5: the status cache, hit vs miss, inside the worker and through ``Cluster``.

In the worker, a broadcast command of the benchmark app (``bench_status_timing``) times
the status cache's hit and a freshly computed status where they happen, since a
broadcast's own round trip is larger than a hit. Through the client, three ways alternate:
a hit in ``Cluster``'s own cache; a client miss answered from the worker's cache (one
broadcast); and no cache at all (``use_cache=False``: broadcast and a fresh status). The
worker has recorded every status for 100 task names, so a fresh status has work to do.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from benchmarks.common import (
    Context,
    Worker,
    client_app,
    log,
    running,
    timed,
)
from benchmarks.queueing import (
    Publisher,
)
from benchmarks.results import (
    Row,
    median,
)
from benchmarks.scrape import populate
from celery_observe import Cluster

HIT_GOAL_MS = 1.0


def _worker_cache_counts(app: Celery, hostname: str) -> tuple[int, int]:
    """(hits, misses) of the worker's status cache."""
    replies = app.control.broadcast("observe_cache_stats", reply=True, destination=[hostname],
                                    limit=1, timeout=5)
    stats = replies[0][hostname]["data"]["caches"]["worker_status"]
    return int(stats["hits"]), int(stats["misses"])


def run(ctx: Context) -> list[Row]:
    names = 10 if ctx.quick else 100
    rounds = 5 if ctx.quick else 50
    in_worker_samples = 20 if ctx.quick else 200
    queue = ctx.unique("cache")
    publisher = Publisher(ctx.redis, queue)
    worker = Worker(ctx.redis, queue, "prefork", 2, observe=True, names=names,
                    hostname=f"{queue}@localhost")
    app = client_app(ctx.redis, queue)
    cached, uncached = Cluster(app), Cluster(app, use_cache=False)
    client: dict[str, list[float]] = {"hit": [], "worker_hit": [], "none": []}
    try:
        with running(worker):
            populate(publisher, names)
            replies = app.control.broadcast(
                "bench_status_timing", arguments={"samples": in_worker_samples}, reply=True,
                destination=[worker.hostname], limit=1, timeout=30)
            timing: dict[str, Any] = replies[0][worker.hostname]
            if "error" in timing:
                raise RuntimeError(f"bench_status_timing: {timing['error']}")
            cached.status()
            uncached.status()  # both clients now know the worker: no discovery wait
            before = _worker_cache_counts(app, worker.hostname)
            for _ in range(rounds):
                client["none"].append(timed(uncached.status)[1] * 1000)
                cached.caches.invalidate()
                client["worker_hit"].append(timed(cached.status)[1] * 1000)
                client["hit"].append(timed(cached.status)[1] * 1000)
            after = _worker_cache_counts(app, worker.hostname)
    finally:
        cached.close()
        uncached.close()
        app.close()
        publisher.close()
    hits = [seconds * 1000 for seconds in timing["hit_seconds"]]
    misses = [seconds * 1000 for seconds in timing["miss_seconds"]]
    worker_hits, worker_misses = after[0] - before[0], after[1] - before[1]
    log(f"fig 5: in-worker hit {median(hits) * 1000:.1f} us, miss {median(misses):.2f} ms; "
        f"client hit {median(client['hit']) * 1000:.1f} us, worker hit "
        f"{median(client['worker_hit']):.2f} ms, no cache {median(client['none']):.2f} ms")
    goal = f"< {HIT_GOAL_MS:g} ms"
    return [
        Row(5, "in the worker: status cache hit", "ms", hits, 1.0, "itself", goal,
            median(hits) < HIT_GOAL_MS, f"{names} task names recorded"),
        Row(5, "in the worker: status computed (miss)", "ms", misses,
            median(misses) / median(hits), "in-worker hit"),
        Row(5, "Cluster(app).status(): client cache hit", "ms", client["hit"], 1.0, "itself",
            goal, median(client["hit"]) < HIT_GOAL_MS),
        Row(5, "Cluster(app).status(): client miss, worker cache hit", "ms",
            client["worker_hit"], median(client["worker_hit"]) / median(client["hit"]),
            "client hit", "", None,
            f"worker cache counted {worker_hits} hits, {worker_misses} misses "
            f"in {rounds} rounds"),
        Row(5, "Cluster(app, use_cache=False).status(): no cache", "ms", client["none"],
            median(client["none"]) / median(client["hit"]), "client hit", "", None,
            "one broadcast and a fresh status in the worker"),
    ]
