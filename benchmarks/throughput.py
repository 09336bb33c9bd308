"""Figure 1: how fast a worker drains no-op tasks, plain vs ``--observe`` vs task events.

Each run starts a fresh worker and, once it is ready and idle, queues all the tasks on
Redis in one transaction: the worker never waits for the producer and its start-up is
not timed. The drain is timed from Redis alone (see :func:`queueing.measure_drain`), so
no variant is asked anything during its run. The observed worker is scraped every 5 s,
as Prometheus would. Variants alternate within each round (7 by default, as issue 15's
goal is defined; every other round in reverse order), and each variant is compared with
plain round by round, so that drift of the machine between rounds cancels out: the ratio
is the median of the rounds' ratios. The main process's CPU time per task has a goal of
its own, as it varies less than the rate from run to run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from benchmarks import instructions
from benchmarks.common import (
    Context,
    Flower,
    Scraper,
    Worker,
    log,
    pool_label,
    running,
)
from benchmarks.queueing import (
    Drain,
    Publisher,
    measure_drain,
)
from benchmarks.results import (
    Row,
    median,
)

POOLS: tuple[tuple[str, int], ...] = (("prefork", 2), ("threads", 4), ("solo", 1))
PLAIN, OBSERVE, EVENTS, FLOWER = "plain", "--observe", "-E", "-E + Flower"
SCRAPE_INTERVAL = 5.0
GOAL = 0.98
CPU_GOAL = 1.02


def drain_once(ctx: Context, pool: str, concurrency: int, variant: str, tasks: int,
               scrape_interval: float | None = SCRAPE_INTERVAL, names: int = 0,
               prepare: Callable[[Publisher, Worker], None] | None = None) -> Drain:
    """One fresh worker of ``variant`` draining ``tasks`` no-op tasks."""
    queue = ctx.unique("tp")
    publisher = Publisher(ctx.redis, queue)
    observe = variant.startswith(OBSERVE)
    worker = Worker(ctx.redis, queue, pool, concurrency, observe=observe,
                    events=variant.startswith(EVENTS), names=names)
    services: list[Worker | Flower] = [Flower(ctx.redis, queue)] if variant == FLOWER else []
    try:
        payloads = publisher.messages(tasks)  # built before the clock and the worker start
        with running(*services, worker):
            if prepare is not None:
                prepare(publisher, worker)
            scraping = (Scraper(worker.port, scrape_interval)
                        if observe and scrape_interval else contextlib.nullcontext())
            with scraping:
                return measure_drain(publisher, worker, payloads)
    finally:
        publisher.close()


def run(ctx: Context) -> list[Row]:
    pools = (("solo", 1),) if ctx.quick else POOLS
    variants = [PLAIN, OBSERVE, EVENTS] + ([FLOWER] if ctx.flower else [])
    if not ctx.flower:
        ctx.notes.append("Figure 1: Flower is not installed (pip install flower), so the "
                         "'-E + Flower' variant was skipped.")
    if ctx.quick:
        ctx.notes.append("Figure 1 (quick mode): solo pool only, "
                         f"{ctx.drain_tasks} tasks, {ctx.rounds} round(s).")
    rows: list[Row] = []
    for pool, concurrency in pools:
        drains: dict[str, list[Drain]] = {variant: [] for variant in variants}
        for number in range(1, ctx.rounds + 1):
            # Odd rounds run the variants in order, even rounds in reverse, so that what a
            # slot inherits from the drain before it falls on each variant alike. In one
            # fixed order (plain, --observe, -E, Flower) solo --observe came out at 0.958
            # of plain's rate and 1.04x its CPU in all 7 rounds of a run whose instruction
            # count said 1.01x, and at 1.008 and 1.000x over 10 rounds of plain and
            # --observe alone, taking turns to go first.
            for variant in variants if number % 2 else variants[::-1]:
                drain = drain_once(ctx, pool, concurrency, variant, ctx.drain_tasks)
                drains[variant].append(drain)
                log(f"fig 1 {pool} -c {concurrency} {variant} round {number}/{ctx.rounds}: "
                    f"{drain.rate:.0f} tasks/s, main CPU {drain.cpu_us_per_task:.0f} us/task")
        rows += _rows(pool, concurrency, drains)
    return rows + instructions.rows(ctx, pools)


def median_round_ratio(values: list[float], plain: list[float]) -> float:
    """The median of each round's ratio to plain's run of the same round."""
    return median(value / base for value, base in zip(values, plain, strict=True))


def _rows(pool: str, concurrency: int, drains: dict[str, list[Drain]]) -> list[Row]:
    label = pool_label(pool, concurrency)
    rates = {variant: [d.rate for d in runs] for variant, runs in drains.items()}
    cpus = {variant: [d.cpu_us_per_task for d in runs] for variant, runs in drains.items()}
    cpu_ratios = {variant: median_round_ratio(values, cpus[PLAIN])
                  for variant, values in cpus.items()}
    versus = "plain, round by round"
    rows = []
    for variant, values in rates.items():
        ratio = median_round_ratio(values, rates[PLAIN])
        note = (f"main-process CPU {median(cpus[variant]):.0f} µs/task "
                f"({cpu_ratios[variant]:.2f}x)")
        goal, met = "", None
        if variant == OBSERVE:
            note += f"; scraped every {SCRAPE_INTERVAL:g} s"
            goal = f"≥ {GOAL} and above -E (min > -E max)"
            met = ratio >= GOAL and (EVENTS not in rates or min(values) > max(rates[EVENTS]))
        rows.append(Row(1, f"{label}: {variant}", "tasks/s", values, ratio, versus, goal, met,
                        note))
    rows.append(Row(1, f"{label}: {OBSERVE}, main-process CPU per task", "µs", cpus[OBSERVE],
                    cpu_ratios[OBSERVE], versus, f"≤ {CPU_GOAL}x", cpu_ratios[OBSERVE] <= CPU_GOAL,
                    f"plain {median(cpus[PLAIN]):.0f} µs/task"))
    return rows
