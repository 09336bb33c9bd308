"""Figure 1's steadiest row: the instructions a worker's main process executes per task.

On this VM the CPU time of one drain swings by more than what figure 1 measures (solo,
plain: 790 to 1,665 µs per task within one hour), and two runs of the same code disagree
on which pool costs more. The instructions a drain executes do not swing: valgrind's
callgrind counts them. Each worker starts under callgrind with counting off (so start-up
takes seconds, not minutes); counting goes on once it is ready and idle, the observed
worker is scraped once (as every 5 s is at figure 1's ~600 tasks/s: one scrape per 3,000
tasks), the tasks are queued at once, and the count is dumped when the queue is empty.
The count is of user-space instructions in every thread of the main process; the kernel's
work (the same system calls for both variants) is not in it. Drains of one variant
differ by about 0.5% here (plain prefork: 3.415, 3.422 and 3.440 million per task in three
runs), a tenth of what the CPU time swings, so one drain per variant is enough.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import (
    PROMETHEUS_HEADERS,
    Context,
    Worker,
    http_get,
    log,
    pool_label,
    running,
)
from benchmarks.queueing import Publisher
from benchmarks.results import Row

#: Tasks per counted drain (~2 min under callgrind here), and per scrape.
TASKS = 3000
#: Start-up under valgrind, counting off, takes ~10 s here.
READY_TIMEOUT = 300.0
GOAL = 1.02
TOOLS = ("valgrind", "callgrind_control")


def available() -> bool:
    return all(shutil.which(tool) for tool in TOOLS)


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=60)


def count_once(ctx: Context, pool: str, concurrency: int, observe: bool, tasks: int) -> float:
    """Instructions per task of one drain of ``tasks`` no-op tasks by a fresh worker."""
    queue = ctx.unique("instr")
    publisher = Publisher(ctx.redis, queue)
    with tempfile.TemporaryDirectory(prefix="observe-bench-callgrind-") as folder:
        out = Path(folder) / "callgrind.out"
        worker = Worker(ctx.redis, queue, pool, concurrency, observe=observe,
                        wrapper=("valgrind", "--tool=callgrind", "--instr-atstart=no",
                                 f"--callgrind-out-file={out}"))
        try:
            payloads = publisher.messages(tasks)
            with running(worker, timeout=READY_TIMEOUT):
                pid = str(worker.pid)
                _control("--instr=on", pid)
                if observe:
                    http_get(worker.port, "/metrics", PROMETHEUS_HEADERS)
                publisher.push(payloads)
                publisher.wait_empty(60 + tasks)
                _control("--dump", pid)
            dump = Path(f"{out}.1")
            found = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
            if found is None:
                raise RuntimeError(f"no instruction total in {dump}")
            return int(found.group(1)) / tasks
        finally:
            publisher.close()


def rows(ctx: Context, pools: tuple[tuple[str, int], ...]) -> list[Row]:
    """One drain each of plain and observed per pool."""
    if not available():
        ctx.notes.append("Figure 1: valgrind is not installed (Debian: apt-get install "
                         "valgrind), so the instructions-per-task rows were skipped.")
        return []
    tasks = min(TASKS, ctx.drain_tasks)
    out = []
    for pool, concurrency in pools:
        plain, observed = (count_once(ctx, pool, concurrency, observe, tasks)
                           for observe in (False, True))
        log(f"fig 1 {pool} instructions per task: plain {plain:,.0f}, --observe {observed:,.0f}")
        ratio = observed / plain
        variant = f"{pool_label(pool, concurrency)}: --observe, main-process instructions per task"
        out.append(Row(1, variant, "instructions", [observed], ratio, "plain, same run",
                       f"≤ {GOAL}x", ratio <= GOAL,
                       f"callgrind, one drain of {tasks} tasks each, scraped once; "
                       f"plain {plain:,.0f} per task"))
    return out
