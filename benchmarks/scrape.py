"""Figure 4: what a scrape costs as the number of task names grows.

For 10, 100 and 500 task names, each with every status (success, failure, retry,
rejected, revoked), an observed prefork worker is scraped: latency and size of
``/metrics`` as text and gzipped, and the main process's CPU time per scrape with the
headers Prometheus sends; at 500 names also the first scrape after every name recorded
something new (the page keeps each name's lines until it changes). Each bucket set's
cost is read off a worker running with it: the duration histogram's series and bytes per
task name with every status. Then figure 1's drain is run with those names recorded: plain
worker, observed and not scraped, observed and scraped every second. Measuring a 1%
effect directly is below this machine's run-to-run noise (2-5%), so the impact at a
15 s interval is derived two ways: the 1 s impact divided by 15, and CPU per scrape
over 15 s (a scrape holds the GIL the main loop needs).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from benchmarks.appenv import task_name
from benchmarks.common import (
    PROMETHEUS_HEADERS,
    Context,
    Worker,
    http_get,
    log,
    running,
)
from benchmarks.queueing import (
    MODES,
    Drain,
    Publisher,
)
from benchmarks.results import (
    Row,
    median,
)
from benchmarks.throughput import OBSERVE, PLAIN, drain_once
from celery_observe.testing import parse_metrics, wait_until

SERIES_COUNTS = (10, 100, 500)
OUTCOMES_PER_NAME = 6  # the retry's second run succeeds
LATENCY_GOAL_MS = 10.0
CHANGED_GOAL_MS = 100.0
GOAL_NAMES = 500
BUCKET_SETS = ("default", "guide", "fast")
BUCKET_NAMES = 10
DURATION = "celery_task_duration_seconds"
IMPACT_GOAL = 0.01
PROMETHEUS_INTERVAL = 15.0
UNSCRAPED, SCRAPED = f"{OBSERVE}, not scraped", f"{OBSERVE}, scraped every 1 s"


def populate(publisher: Publisher, names: int) -> None:
    """Give ``names`` task names one outcome of every status, and wait till all are done."""
    task_names = [task_name(index) for index in range(names)]
    payloads = [payload for mode in MODES
                for payload in publisher.messages(names, mode, task_names)]
    publisher.push(payloads)
    publisher.wait_empty(timeout=120 + names)


def recorded(port: int | None) -> int:
    """Outcomes a worker's ``/metrics`` counts in ``celery_task_total``."""
    return int(parse_metrics(http_get(port, "/metrics")[1].decode()).total("celery_task_total"))


def finished(port: int | None) -> int:
    """Outcomes a worker's JSON ``/status`` counts: a wait that renders no ``/metrics``."""
    return sum(json.loads(http_get(port, "/status")[1])["counts"].values())


def _wait_for(count: Callable[[int | None], int], port: int | None, outcomes: int) -> None:
    wait_until(lambda: count(port) >= outcomes, 60, f"{outcomes:,} outcomes to be recorded")


def _latency(ctx: Context, names: int, samples: int) -> list[Row]:
    queue = ctx.unique("scrape")
    publisher = Publisher(ctx.redis, queue)
    worker = Worker(ctx.redis, queue, "prefork", 2, observe=True, names=names)
    text: list[float] = []
    gzipped: list[float] = []
    try:
        with running(worker):
            populate(publisher, names)
            wait_until(lambda: recorded(worker.port) >= OUTCOMES_PER_NAME * names, 30,
                       "every outcome to be recorded")
            for _ in range(samples):
                for headers, into in (({}, text), ({"Accept-Encoding": "gzip"}, gzipped)):
                    status, _body, seconds, _h = http_get(worker.port, "/metrics", headers)
                    if status != 200:
                        raise RuntimeError(f"/metrics answered {status}")
                    into.append(seconds * 1000)
            plain_body = http_get(worker.port, "/metrics")[1]
            gzip_body = http_get(worker.port, "/metrics", {"Accept-Encoding": "gzip"})[1]
            cpu_ms = _cpu_per_scrape(worker, samples)
            changed = (_after_every_name_changed(worker, publisher, names, max(samples // 3, 2))
                       if names == GOAL_NAMES or ctx.quick else [])
    finally:
        publisher.close()
    series = sum(1 for line in plain_body.decode().splitlines()
                 if line and not line.startswith("#"))
    label = f"{names} names ({series:,} series)"
    goal = f"p50 < {LATENCY_GOAL_MS:g} ms" if names == GOAL_NAMES else ""
    impact = cpu_ms / 1000 / PROMETHEUS_INTERVAL
    log(f"fig 4 {label}: text {median(text):.1f} ms {len(plain_body):,} B, gzip "
        f"{median(gzipped):.1f} ms {len(gzip_body):,} B, CPU {cpu_ms:.1f} ms/scrape")
    rows = [
        Row(4, f"{label}: GET /metrics, text", "ms", text, 1.0, "itself", goal,
            median(text) < LATENCY_GOAL_MS if goal else None, f"{len(plain_body):,} bytes"),
        Row(4, f"{label}: GET /metrics, gzip", "ms", gzipped, median(gzipped) / median(text),
            "text", "", None, f"{len(gzip_body):,} bytes; the goal is the text page's"),
        Row(4, f"{label}: main-process CPU per Prometheus scrape", "ms CPU", [cpu_ms], None, "",
            f"÷ {PROMETHEUS_INTERVAL:g} s < {IMPACT_GOAL:.0%}", impact < IMPACT_GOAL,
            f"= {impact:.3%} of the main loop at a {PROMETHEUS_INTERVAL:g} s interval"),
    ]
    if changed:
        rows.append(Row(4, f"{label}: first GET /metrics (text) after every name changed", "ms",
                        changed, median(changed) / median(text), "unchanged page",
                        f"< {CHANGED_GOAL_MS:g} ms", median(changed) < CHANGED_GOAL_MS,
                        "each sample after one more outcome of every status for every name"))
    return rows


def _after_every_name_changed(worker: Worker, publisher: Publisher, names: int,
                              samples: int) -> list[float]:
    """Milliseconds of the first text scrape after every name recorded new outcomes."""
    times: list[float] = []
    for _ in range(samples):
        before = finished(worker.port)
        populate(publisher, names)
        _wait_for(finished, worker.port, before + OUTCOMES_PER_NAME * names)
        status, _body, seconds, _h = http_get(worker.port, "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        times.append(seconds * 1000)
    return times


def _bucket_costs(ctx: Context, sets: tuple[str, ...]) -> list[Row]:
    """Each bucket set's duration histogram per task name with every status."""
    rows: list[Row] = []
    for bucket_set in sets:
        queue = ctx.unique("buckets")
        publisher = Publisher(ctx.redis, queue)
        worker = Worker(ctx.redis, queue, "prefork", 2, observe=True, names=BUCKET_NAMES,
                        options=("--observe-buckets", bucket_set))
        try:
            with running(worker):
                populate(publisher, BUCKET_NAMES)
                _wait_for(recorded, worker.port, OUTCOMES_PER_NAME * BUCKET_NAMES)
                page = http_get(worker.port, "/metrics")[1].decode()
        finally:
            publisher.close()
        lines = [line for line in page.splitlines() if line.startswith(DURATION)]
        series = len(lines) / BUCKET_NAMES
        size = sum(len(line) + 1 for line in lines) / BUCKET_NAMES
        log(f"fig 4 buckets {bucket_set}: {series:.0f} series, {size:,.0f} bytes per name")
        rows.append(Row(4, f"--observe-buckets {bucket_set}: {DURATION} per task name with "
                        "every status", "series", [series], None, "", "", None,
                        f"{size:,.0f} bytes of text per name"))
    return rows


def _cpu_per_scrape(worker: Worker, scrapes: int) -> float:
    """Main-process CPU milliseconds per scrape as Prometheus makes it (OpenMetrics, gzip)."""
    process = worker.main_process()
    scrapes = max(scrapes, 20)  # CPU counters tick in 10 ms: take enough to see them
    before = process.cpu_times()
    for _ in range(scrapes):
        http_get(worker.port, "/metrics", PROMETHEUS_HEADERS)
    after = process.cpu_times()
    return (after.user + after.system - before.user - before.system) / scrapes * 1000


def _throughput(ctx: Context, names: int) -> list[Row]:
    variants = {PLAIN: None, UNSCRAPED: None, SCRAPED: 1.0}
    drains: dict[str, list[Drain]] = {variant: [] for variant in variants}
    for number in range(1, ctx.runs + 1):
        for variant, interval in variants.items():
            drain = drain_once(ctx, "prefork", 2, variant, ctx.drain_tasks,
                               scrape_interval=interval, names=names,
                               prepare=lambda publisher, _worker: populate(publisher, names))
            drains[variant].append(drain)
            log(f"fig 4 {names} names {variant} run {number}/{ctx.runs}: {drain.rate:.0f} tasks/s")
    rates = {variant: [d.rate for d in runs] for variant, runs in drains.items()}
    base = median(rates[PLAIN])
    rows = [Row(4, f"{names} names, prefork -c 2 drain: {variant}", "tasks/s", values,
                median(values) / base, "plain") for variant, values in rates.items()]
    impact_1s = 1 - median(rates[SCRAPED]) / median(rates[UNSCRAPED])
    impact = impact_1s / PROMETHEUS_INTERVAL
    rows[-1].note = f"{impact_1s:.1%} slower than not scraped"
    rows.append(Row(4, f"{names} names: throughput impact of a scrape every "
                    f"{PROMETHEUS_INTERVAL:g} s (derived: 1 s impact ÷ 15)", "%",
                    [impact * 100], None, "", f"< {IMPACT_GOAL:.0%}", impact < IMPACT_GOAL,
                    "negative = within noise"))
    return rows


def run(ctx: Context) -> list[Row]:
    counts = (10,) if ctx.quick else SERIES_COUNTS
    samples = 5 if ctx.quick else 15
    rows: list[Row] = []
    for names in counts:
        rows += _latency(ctx, names, samples)
    rows += _bucket_costs(ctx, BUCKET_SETS[:1] if ctx.quick else BUCKET_SETS)
    for names in counts:
        rows += _throughput(ctx, names)
    if ctx.quick:
        ctx.notes.append(f"Figure 4 (quick mode): {counts} names, {samples} samples, "
                         f"{ctx.drain_tasks} tasks per drain.")
    return rows
