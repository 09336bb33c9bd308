"""Figure 7: the cluster HTTP API (``celery -A app observe serve``) vs Flower and
``celery inspect``, asked about the same cluster in the same run.

Each setup (4 observed prefork ``-c 1`` workers on Redis, then on RabbitMQ; 50 solo ones
on Redis) gets a real API process (uvicorn; its rate limit raised, so every uncached
request is a broadcast) and, as anchors, Flower and the ``celery inspect active`` command
line. Asked alternately, a round at a time: uncached requests (``use_cache=false``), timed
by the client on a new connection each, as a dashboard makes them; cached requests, timed
so too and by the server itself (the API's ``celery_observe_api_request_duration_seconds``
histogram: each sample is the mean over a batch of hits); Flower's
``/api/workers?refresh=1``; ``celery inspect active``. The API's RSS is read at the end.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from benchmarks.common import (
    ApiServer,
    Context,
    Flower,
    HttpService,
    Worker,
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
from celery_observe.testing import parse_metrics, wait_until

WORKERS = 4
BIG_CLUSTER = 50
CACHED_GOAL_MS = 1.0
RSS_GOAL_MB = 80.0
#: Cached hits per server-time sample (one /metrics read before and after each batch).
BATCH = 20
DURATION = "celery_observe_api_request_duration_seconds"
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


def _server_ms(metrics: bytes, path: str) -> tuple[float, float, float]:
    """(sum, count, count under 1 ms) of the API's duration histogram for ``path``."""
    samples = parse_metrics(metrics.decode())
    return (samples.value(f"{DURATION}_sum", path=path) or 0.0,
            samples.value(f"{DURATION}_count", path=path) or 0.0,
            samples.value(f"{DURATION}_bucket", path=path, le="0.001") or 0.0)


def _online(api: ApiServer, workers: int) -> bool:
    status, body, _seconds, _headers = http_get(
        api.port, f"{api.prefix}/workers/status?use_cache=false")
    return status == 200 and json.loads(body)["online_workers"] == workers


def _versus(anchors: dict[str, float], value: float) -> str:
    return ", ".join(f"{name} is {anchor / value:,.0f}x slower"
                     for name, anchor in anchors.items() if value > 0)


def _measure(ctx: Context, setup: Setup, rounds: int, per_round: int) -> list[Row]:
    queue = ctx.unique("api")
    workers = cluster_workers(setup.broker, queue, setup.workers, pool=setup.pool)
    api = ApiServer(setup.broker, queue)
    flower = Flower(setup.broker, queue) if ctx.flower else None
    services: list[Worker | HttpService] = [*workers, api, *([flower] if flower else [])]
    env = bench_env(setup.broker, queue, 0)
    cached_path = setup.endpoints[0][0]
    samples: dict[str, list[float]] = defaultdict(list)
    hits = under_1ms = 0.0
    problems: set[str] = set()
    timeout = BIG_READY_TIMEOUT if setup.workers > WORKERS else 60.0
    try:
        with running(*services, timeout=timeout):
            wait_until(lambda: _online(api, setup.workers), timeout,
                       f"the API to see all {setup.workers} workers")
            if flower is not None:  # Flower's first refresh also learns the workers
                http_get(flower.port, "/api/workers?refresh=1", timeout=30)
            for number in range(rounds):
                for path, _goal in setup.endpoints:
                    for _ in range(per_round):
                        status, _body, seconds, _headers = http_get(
                            api.port, f"{api.prefix}{path}?use_cache=false")
                        samples[path].append(seconds * 1000)
                        if status != 200:
                            problems.add(f"{path} answered {status}")
                for _ in range(2):
                    http_get(api.port, api.prefix + cached_path)  # fills the cache if empty
                    before = _server_ms(http_get(api.port, f"{api.prefix}/metrics")[1],
                                        cached_path)
                    for _ in range(BATCH):
                        status, _body, seconds, headers = http_get(api.port,
                                                                   api.prefix + cached_path)
                        samples["cached"].append(seconds * 1000)
                        if status != 200 or headers.get("x-cache") != "HIT":
                            problems.add(f"a cached {cached_path} was {status} "
                                         f"{headers.get('x-cache')}")
                    after = _server_ms(http_get(api.port, f"{api.prefix}/metrics")[1],
                                       cached_path)
                    count = after[1] - before[1]
                    samples["server"].append((after[0] - before[0]) / max(count, 1) * 1000)
                    hits += count
                    under_1ms += after[2] - before[2]
                if flower is not None:
                    status, body, seconds, _headers = http_get(
                        flower.port, "/api/workers?refresh=1", timeout=30)
                    samples["flower"].append(seconds * 1000)
                    seen = len(json.loads(body)) if status == 200 else 0
                    if seen != setup.workers:
                        problems.add(f"Flower answered {status} with {seen} workers")
                seconds, code, output = time_command(celery_command("inspect", "active"), env)
                samples["inspect"].append(seconds * 1000)
                if code != 0 or f"{setup.workers} nodes online" not in output:
                    problems.add(f"inspect active exit {code}: {output.strip()[-200:]}")
                log(f"fig 7 {setup.label}round {number + 1}/{rounds}: "
                    + ", ".join(f"{key} {median(values):.1f} ms"
                                for key, values in samples.items()))
            rss = api.rss_mb()
    finally:
        if setup.broker_name == "RabbitMQ":
            cleanup_amqp(queue)
    return _rows(setup, samples, rss, under_1ms / max(hits, 1), problems)


def _rows(setup: Setup, samples: dict[str, list[float]], rss: float, share_fast: float,
          problems: set[str]) -> list[Row]:
    prefix, note = setup.label, "; ".join(sorted(problems))
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
    cached_path = setup.endpoints[0][0]
    uncached, server = median(samples[cached_path]), median(samples["server"])
    rows += [
        Row(7, f"{prefix}GET {cached_path} cached, server time", "ms", samples["server"],
            None, "", f"< {CACHED_GOAL_MS:g} ms" if setup.cached_goal else "",
            server < CACHED_GOAL_MS if setup.cached_goal else None,
            f"mean of {BATCH} hits per sample, from the API's own histogram; "
            f"{share_fast:.0%} of hits under 1 ms; {_versus(anchors, server)}"),
        Row(7, f"{prefix}GET {cached_path} cached, round trip", "ms", samples["cached"], None,
            "", "", None, f"a new connection each; {_versus(anchors, median(samples['cached']))}"),
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
