"""Figure 7: the cluster HTTP API (``celery -A app observe serve``) vs Flower and
``celery inspect``, asked about the same cluster in the same run.

Each setup (4 observed prefork ``-c 1`` workers on Redis, then on RabbitMQ; 50 solo ones
on Redis) gets a real API process (uvicorn; its rate limit raised, so every uncached
request is a broadcast) and, as anchors, Flower and the ``celery inspect active`` command
line. Asked alternately, a round at a time: uncached requests (``use_cache=false``), timed
by the client on a new connection each, as a dashboard makes them; batches of cached hits,
timed so too and by the server: per request from the API's own request log (the whole
app), and per batch from its ``celery_observe_api_request_duration_seconds`` histogram
(the route alone); Flower's ``/api/workers?refresh=1``; ``celery inspect active``. The
API's RSS is read at the end. Ratios divide an anchor's median by the API's.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass

from benchmarks.common import (
    ApiServer,
    Context,
    Flower,
    bench_env,
    celery_command,
    cleanup_amqp,
    cluster_workers,
    http_get,
    log,
    running,
    time_command,
)
from benchmarks.results import (
    Row,
    median,
    summarize,
)
from celery_observe.named_caches import CACHE_SPECS
from celery_observe.testing import parse_metrics, wait_until

WORKERS = 4
BIG_CLUSTER = 50
CACHED_GOAL_MS = 1.0
RSS_GOAL_MB = 80.0
#: Cached hits per server-time sample (one /metrics read before and after each batch).
BATCH = 20
DURATION = "celery_observe_api_request_duration_seconds"
#: The API's own line per request (``celery_observe.cluster.serve.RequestLog``).
REQUEST_LINE = re.compile(r" [A-Z]+ (\S+) \d{3} (\d+\.\d) ms ")
#: Answers are cached this long; a batch starts on one with this much time left.
TTL, FRESH_MARGIN = CACHE_SPECS["worker_status"][0], 2.0
FLOWER, INSPECT = "Flower /api/workers?refresh=1", "celery inspect active"
#: 50 workers start at once on this machine's 2 cores (~1 s of CPU each).
BIG_READY_TIMEOUT = 300.0
EXPORTER_NOTE = ("not measured: `pip install celery-exporter` (1.5.1, 2021, a Rust build) "
                 "fails here: maturin rejects its Cargo.toml metadata")


@dataclass(frozen=True)
class Setup:
    """One cluster asked by the API and the anchors."""

    broker_name: str
    broker: str
    workers: int
    pool: str
    #: Paths asked uncached, each with its p50 goal in ms; the first is also asked cached.
    endpoints: tuple[tuple[str, float], ...]
    #: The < 1 ms cached goal is stated for 4 workers.
    cached_goal: bool

    @property
    def label(self) -> str:
        return f"{self.broker_name}, {self.workers} {self.pool} workers: "


class Asker:
    """Asks one setup's API and anchors, collecting every sample and what went wrong."""

    def __init__(self, setup: Setup, api: ApiServer, flower: Flower | None,
                 env: dict[str, str]) -> None:
        self.setup, self.api, self.flower, self.env = setup, api, flower, env
        self.cached_path = setup.endpoints[0][0]
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.problems: set[str] = set()
        self.hits = self.hits_under_1ms = 0.0
        self.sent = 0  # requests to the API, each logged by it

    def get(self, path: str) -> tuple[int | None, bytes, float, dict[str, str]]:
        self.sent += 1
        return http_get(self.api.port, self.api.prefix + path)

    def online(self) -> bool:
        status, body, _seconds, _headers = self.get("/workers/status?use_cache=false")
        return status == 200 and json.loads(body)["online_workers"] == self.setup.workers

    def uncached(self, count: int) -> None:
        for path, _goal in self.setup.endpoints:
            for _ in range(count):
                status, _body, seconds, _headers = self.get(f"{path}?use_cache=false")
                self.samples[path].append(seconds * 1000)
                if status != 200:
                    self.problems.add(f"{path} answered {status}")

    def _fresh(self) -> bool:
        """True once the cached answer is young enough to outlive a batch of hits."""
        headers = self.get(self.cached_path)[3]
        return float(headers.get("x-cache-age", "0")) < TTL - FRESH_MARGIN

    def cached_batch(self) -> None:
        """``BATCH`` hits, timed by the client, by the request log and by the histogram."""
        wait_until(self._fresh, TTL + 5, "a fresh cached answer")
        done = len(wait_until(self._logged, 5.0, "the API to log every request") or [])
        before = self._histogram()
        for _ in range(BATCH):
            status, _body, seconds, headers = self.get(self.cached_path)
            self.samples["cached"].append(seconds * 1000)
            if status != 200 or headers.get("x-cache") != "HIT":
                self.problems.add(f"a cached {self.cached_path} was {status} "
                                  f"{headers.get('x-cache')}")
        after = self._histogram()
        logged = (wait_until(self._logged, 5.0, "the API to log every request") or [])[done:]
        self.samples["server"] += [ms for path, ms in logged
                                   if path == self.api.prefix + self.cached_path]
        count = after[1] - before[1]
        self.samples["histogram"].append((after[0] - before[0]) / max(count, 1) * 1000)
        self.hits += count
        self.hits_under_1ms += after[2] - before[2]

    def _logged(self) -> list[tuple[str, float]] | None:
        """(path, ms) of every request the API logged, once it logged all :meth:`get` sent
        (a line is written after its response)."""
        found = [(line[1], float(line[2])) for line in REQUEST_LINE.finditer(self.api.log())
                 if line[1].startswith(self.api.prefix)]
        return found if len(found) >= self.sent else None

    def _histogram(self) -> tuple[float, float, float]:
        """(sum, count, count under 1 ms) of the API's duration histogram for the path."""
        samples = parse_metrics(self.get("/metrics")[1].decode())
        labels = {"path": self.cached_path}
        return (samples.value(f"{DURATION}_sum", **labels) or 0.0,
                samples.value(f"{DURATION}_count", **labels) or 0.0,
                samples.value(f"{DURATION}_bucket", **labels, le="0.001") or 0.0)

    def flower_refresh(self) -> None:
        if self.flower is None:
            return
        status, body, seconds, _headers = http_get(self.flower.port, "/api/workers?refresh=1",
                                                   timeout=30)
        self.samples["flower"].append(seconds * 1000)
        seen = len(json.loads(body)) if status == 200 else 0
        if seen != self.setup.workers:
            self.problems.add(f"Flower answered {status} with {seen} workers")

    def inspect_active(self) -> None:
        seconds, code, output = time_command(celery_command("inspect", "active"), self.env)
        self.samples["inspect"].append(seconds * 1000)
        if code != 0 or f"{self.setup.workers} nodes online" not in output:
            self.problems.add(f"inspect active exit {code}: {output.strip()[-200:]}")


def _measure(ctx: Context, setup: Setup, rounds: int, per_round: int) -> list[Row]:
    queue = ctx.unique("api")
    workers = cluster_workers(setup.broker, queue, setup.workers, pool=setup.pool)
    api = ApiServer(setup.broker, queue)
    flower = Flower(setup.broker, queue) if ctx.flower else None
    asker = Asker(setup, api, flower, bench_env(setup.broker, queue, 0))
    timeout = BIG_READY_TIMEOUT if setup.workers > WORKERS else 60.0
    try:
        with running(*workers, api, *([flower] if flower else []), timeout=timeout):
            wait_until(asker.online, timeout, f"the API to see all {setup.workers} workers")
            if flower is not None:  # Flower's first refresh also learns the workers
                http_get(flower.port, "/api/workers?refresh=1", timeout=30)
            for number in range(rounds):
                asker.uncached(per_round)
                for _ in range(2):
                    asker.cached_batch()
                asker.flower_refresh()
                asker.inspect_active()
                log(f"fig 7 {setup.label}round {number + 1}/{rounds}: "
                    + ", ".join(f"{key} {median(values):.1f} ms"
                                for key, values in asker.samples.items()))
            rss = api.rss_mb()
    finally:
        if setup.broker_name == "RabbitMQ":
            cleanup_amqp(queue)
    return _rows(asker, rss)


def _versus(anchors: dict[str, float], value: float) -> str:
    """How many times slower each anchor was than ``value``."""
    return ", ".join(f"{name} is {anchor / value:,.0f}x slower"
                     for name, anchor in anchors.items() if value > 0)


def _rows(asker: Asker, rss: float) -> list[Row]:
    setup, samples = asker.setup, asker.samples
    prefix, note = setup.label, "; ".join(sorted(asker.problems))
    anchors: dict[str, float] = {}
    if samples["flower"]:
        anchors[FLOWER] = median(samples["flower"])
    anchors[INSPECT] = median(samples["inspect"])
    rows: list[Row] = []
    for path, goal in setup.endpoints:
        values = samples[path]
        p50 = median(values)
        rows.append(Row(7, f"{prefix}GET {path}?use_cache=false, round trip", "ms", values,
                        1.0, "itself", f"p50 < {goal:g} ms", p50 < goal,
                        "; ".join(filter(None, [note, f"p95 {summarize(values)['p95']:.1f} "
                                                      f"ms", _versus(anchors, p50)]))))
    cached_path = asker.cached_path
    uncached, server = median(samples[cached_path]), median(samples["server"])
    share_fast = asker.hits_under_1ms / max(asker.hits, 1)
    rows += [
        Row(7, f"{prefix}GET {cached_path} cached, server time", "ms", samples["server"],
            None, "", f"p50 < {CACHED_GOAL_MS:g} ms" if setup.cached_goal else "",
            server < CACHED_GOAL_MS if setup.cached_goal else None,
            f"per request, from the API's request log (0.1 ms steps); its duration histogram "
            f"(the route alone): mean {median(samples['histogram']):.2f} ms per batch of "
            f"{BATCH}, {share_fast:.0%} under 1 ms; {_versus(anchors, server)}"),
        Row(7, f"{prefix}GET {cached_path} cached, round trip", "ms", samples["cached"], None,
            "", "", None,
            f"a new connection each; {_versus(anchors, median(samples['cached']))}"),
        Row(7, f"{prefix}API process RSS after the run", "MB", [rss], None, "",
            f"< {RSS_GOAL_MB:g} MB", rss < RSS_GOAL_MB, ""),
    ]
    if samples["flower"]:
        rows.append(Row(7, f"{prefix}Flower GET /api/workers?refresh=1 (anchor)", "ms",
                        samples["flower"], anchors[FLOWER] / uncached,
                        f"uncached {cached_path}", "", None,
                        "Flower 2: inspect broadcasts that wait out their 1 s timeout"))
    rows.append(Row(7, f"{prefix}celery -A app inspect active, CLI (anchor)", "ms",
                    samples["inspect"], anchors[INSPECT] / uncached,
                    f"uncached {cached_path}", "", None, "waits its whole 1 s timeout"))
    return rows


def run(ctx: Context) -> list[Row]:
    if ctx.quick:  # one 4-worker cluster asked both ways; the 50-worker goal on 4 workers
        setups = [Setup("Redis", ctx.redis, WORKERS, "prefork",
                        (("/workers/status", 20.0), ("/status", 200.0)), True)]
        ctx.notes.append("Figure 7 (quick mode): Redis only, 4 workers, one round; "
                         "/status asked on 4 workers, not 50.")
    else:
        setups = [Setup(name, broker, WORKERS, "prefork", (("/workers/status", 20.0),), True)
                  for name, broker in (("Redis", ctx.redis), ("RabbitMQ", ctx.amqp))
                  if broker is not None]
        setups.append(Setup("Redis", ctx.redis, BIG_CLUSTER, "solo", (("/status", 200.0),),
                            False))
    if not ctx.flower:
        ctx.notes.append("Figure 7: Flower is not installed (pip install flower) or "
                         "--no-flower was given, so its anchor was skipped.")
    rows: list[Row] = []
    for setup in setups:
        rows += _measure(ctx, setup, rounds=1 if ctx.quick else 5,
                         per_round=10 if ctx.quick else 20)
    rows.append(Row(7, "celery-exporter GET /metrics (anchor)", "ms", [], note=EXPORTER_NOTE))
    return rows
