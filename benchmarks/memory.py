"""Figure 6: the worker's memory with and without ``--observe`` after many tasks.

A prefork (``-c 2``) worker runs tasks whose names cycle through 1,000 distinct names,
each with every status (success, failure, retry, rejected, revoked; a name's status turns
batch by batch); a feeder keeps a few thousand waiting (the queue never holds them all).
At each checkpoint (100,000 tasks; also 500,000 and 1,000,000 with ``--tasks-1m``) the
feeder pauses, the queue empties, and the resident memory (RSS) of the main process,
where all observation lives, is read, and each pool child's. Plain and observed runs
alternate; the overhead is taken run pair by run pair. After the last checkpoint an
observed worker is scraped once and read again: a scrape holds the page (and its per-task
text cache) in the main process.
"""

from __future__ import annotations

import time

from benchmarks.appenv import task_name
from benchmarks.common import (
    Context,
    Worker,
    log,
    running,
)
from benchmarks.queueing import (
    MODES,
    Publisher,
)
from benchmarks.results import (
    Row,
    median,
)

NAMES = 1000
OVERHEAD_GOAL_MB = 4.0
CHILD_OVERHEAD_GOAL_MB = 1.0
CHILDREN = 2
FLAT_GOAL_MB = 2.0
#: With ``--tasks-1m``: the overhead must not grow from here to 1,000,000 tasks.
FLAT_FROM = 500_000
MB = 1024 * 1024


def _run_once(ctx: Context, observe: bool, checkpoints: list[int],
              names: int) -> tuple[float, list[float], list[float], float | None]:
    """(RSS at start, main RSS at each checkpoint, RSS per child at each, main RSS after
    one scrape at the end (observed runs)) in MB."""
    queue = ctx.unique("mem")
    publisher = Publisher(ctx.redis, queue)
    worker = Worker(ctx.redis, queue, "prefork", CHILDREN, observe=observe, names=names)
    task_names = [task_name(index) for index in range(names)]
    main: list[float] = []
    children: list[float] = []
    scraped: float | None = None
    try:
        with running(worker):
            process = worker.main_process()
            start = process.memory_info().rss / MB
            pushed = 0
            batch = min(2000, checkpoints[-1])
            for checkpoint in checkpoints:
                while pushed < checkpoint:
                    if publisher.backlog()[0] < batch:
                        count = min(batch, checkpoint - pushed)
                        # Names continue where the last batch stopped, so all get used.
                        names_now = [task_names[(pushed + i) % names] for i in range(count)]
                        publisher.push(_every_status(publisher, names_now, pushed // batch))
                        pushed += count
                    else:
                        time.sleep(0.05)
                publisher.wait_empty(timeout=600)
                time.sleep(0.5)
                main.append(process.memory_info().rss / MB)
                children.append(sum(child.memory_info().rss
                                    for child in process.children()) / MB / CHILDREN)
                log(f"fig 6 {'observe' if observe else 'plain'} after {checkpoint:,} tasks: "
                    f"main {main[-1]:.1f} MB (start {start:.1f}), each child "
                    f"{children[-1]:.1f} MB")
            if observe:
                page = len(worker.get("/metrics")[2])
                time.sleep(0.5)
                scraped = process.memory_info().rss / MB
                log(f"fig 6 observe after a scrape ({page:,} bytes): main {scraped:.1f} MB")
    finally:
        publisher.close()
    return start, main, children, scraped


def _every_status(publisher: Publisher, names: list[str], rotation: int) -> list[bytes]:
    """One message per name, the statuses spread over them and turned by ``rotation``."""
    payloads: list[bytes] = []
    for offset, mode in enumerate(MODES):
        picked = names[(offset + rotation) % len(MODES)::len(MODES)]
        payloads += publisher.messages(len(picked), mode, picked)
    return payloads


def run(ctx: Context) -> list[Row]:
    names = 50 if ctx.quick else NAMES
    checkpoints = [1000] if ctx.quick else [100_000] + (
        [FLAT_FROM, 1_000_000] if ctx.tasks_1m else [])
    results: dict[bool, list[tuple[float, list[float], list[float], float | None]]] = {
        False: [], True: []}
    for _number in range(ctx.runs):
        for observe in (False, True):
            results[observe].append(_run_once(ctx, observe, checkpoints, names))
    rows: list[Row] = []
    overheads_by_checkpoint: list[list[float]] = []
    for index, checkpoint in enumerate(checkpoints):
        plain = [run[1][index] for run in results[False]]
        observed = [run[1][index] for run in results[True]]
        overhead = [o - p for o, p in zip(observed, plain, strict=True)]
        overheads_by_checkpoint.append(overhead)
        at = f"after {checkpoint:,} tasks, {names:,} names, every status"
        kids = [run[2][index] for run in results[False]]
        kids_observed = [run[2][index] for run in results[True]]
        kid_overhead = [o - p for o, p in zip(kids_observed, kids, strict=True)]
        rows += [
            Row(6, f"{at}: plain worker, main process", "MB", plain, 1.0, "plain", "", None,
                f"at start {median(run[0] for run in results[False]):.1f} MB"),
            Row(6, f"{at}: --observe, main process (not scraped)", "MB", observed,
                median(observed) / median(plain), "plain", "", None,
                f"at start {median(run[0] for run in results[True]):.1f} MB"),
            Row(6, f"{at}: overhead of --observe (pair by pair)", "MB", overhead, None, "",
                f"< {OVERHEAD_GOAL_MB:g} MB", median(overhead) < OVERHEAD_GOAL_MB),
            Row(6, f"{at}: each pool child, plain", "MB", kids, 1.0, "plain"),
            Row(6, f"{at}: each pool child, overhead of --observe (pair by pair)", "MB",
                kid_overhead, None, "", f"< {CHILD_OVERHEAD_GOAL_MB:g} MB",
                median(kid_overhead) < CHILD_OVERHEAD_GOAL_MB),
        ]
    scraped = [run[3] for run in results[True] if run[3] is not None]
    rows.append(Row(6, f"--observe main process after one scrape, {checkpoints[-1]:,} tasks",
                    "MB", scraped, median(scraped) / median(run[1][-1] for run in results[False]),
                    "plain", "", None, "the page is built in the main process"))
    if FLAT_FROM in checkpoints:
        early_overheads = overheads_by_checkpoint[checkpoints.index(FLAT_FROM)]
        growth = [late - early for early, late in
                  zip(early_overheads, overheads_by_checkpoint[-1], strict=True)]
        rows.append(Row(6, f"overhead growth from {FLAT_FROM:,} to {checkpoints[-1]:,} "
                        "tasks (flat?)", "MB", growth, None, "", f"< {FLAT_GOAL_MB:g} MB",
                        abs(median(growth)) < FLAT_GOAL_MB))
    else:
        rows.append(Row(6, "after 1,000,000 tasks: skipped (pass --tasks-1m; here 46 min "
                           "plain and 74 min observed)",
                        "MB", [], None, "", f"flat (< {FLAT_GOAL_MB:g} MB growth)", None,
                        "not measured in this run"))
    if ctx.quick:
        ctx.notes.append(f"Figure 6 (quick mode): {checkpoints[0]:,} tasks, {names} names.")
    return rows
