"""Run the celery-observe benchmarks and write ``results.md`` and ``results.json``.

    python benchmarks/run.py [--quick] [--only 1,2] [--out benchmarks/results]

Needs Redis on 127.0.0.1:6379 (RabbitMQ on 127.0.0.1:5672 is used too when it runs), and
``pip install '.[bench]'``: Flower (the "-E + Flower" variant, figure 7's anchor) and the
API server (figure 7). Every figure compares variants of the same run, so the ratios hold
on any machine; the absolute numbers are this machine's.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):  # run as a script: import ``benchmarks`` from the repo root,
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # not its files as top level

import redis

from benchmarks import common
from benchmarks.common import (
    AMQP_URL,
    REPO,
    Context,
    flower_installed,
    log,
    redis_url,
)
from benchmarks.results import (
    Row,
    machine_facts,
    write_results,
)
from celery_observe.testing import listening, reap_all

#: Figure 1's goal is defined over this many alternating rounds (issue 15, goal 3).
THROUGHPUT_ROUNDS = 7
MODULES = {1: "throughput", 2: "probes", 3: "cluster_status", 4: "scrape", 5: "cache_status",
           6: "memory", 7: "api", 8: "scale"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (a smoke run in well under a minute; numbers "
                             "are meaningless)")
    parser.add_argument("--only", default="", help="figures to run, e.g. 2,3,5 (default all)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results",
                        help="folder for results.md and results.json")
    parser.add_argument("--runs", type=int, default=None,
                        help="alternating runs per variant (default 3, figure 1's rounds "
                             f"{THROUGHPUT_ROUNDS}; quick 1)")
    parser.add_argument("--tasks", type=int, default=None,
                        help="tasks per drain in figures 1 and 4 (default 20000; quick 200)")
    parser.add_argument("--tasks-1m", action="store_true",
                        help="figure 6: also run to 1,000,000 tasks (long: here 46 min for the "
                             "plain worker and 74 min for the observed one)")
    parser.add_argument("--redis-db", type=int, default=14,
                        help="Redis database the benchmark owns; flushed before and after "
                             "(default 14)")
    parser.add_argument("--no-flower", action="store_true",
                        help="skip '-E + Flower' and figure 7's Flower anchor")
    args = parser.parse_args(argv)
    try:
        args.figures = sorted({int(x) for x in args.only.split(",") if x.strip()} or MODULES)
    except ValueError:
        parser.error(f"--only takes figure numbers such as 2,3,5, not {args.only!r}")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.tasks is not None and args.tasks < 10:
        parser.error("--tasks must be at least 10")
    unknown = set(args.figures) - set(MODULES)
    if unknown:
        parser.error(f"--only: no figure {sorted(unknown)}; figures are 1 to {max(MODULES)}")
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop workers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    atexit.register(reap_all)
    if not listening("127.0.0.1", 6379, timeout=1.0):
        print("Redis is not running on 127.0.0.1:6379; the benchmarks need it.", file=sys.stderr)
        return 2
    common.DEFER_STOPS = args.quick  # overlap worker shutdowns: saves ~2 s per worker
    broker = redis_url(args.redis_db)
    amqp = AMQP_URL if listening("127.0.0.1", 5672, timeout=1.0) else None
    ctx = Context(quick=args.quick, runs=args.runs or (1 if args.quick else 3),
                  rounds=args.runs or (1 if args.quick else THROUGHPUT_ROUNDS),
                  drain_tasks=args.tasks or (200 if args.quick else 20_000),
                  tasks_1m=args.tasks_1m, redis=broker, amqp=amqp,
                  flower=flower_installed() and not args.no_flower)
    if amqp is None:
        ctx.notes.append("RabbitMQ was not reachable on 127.0.0.1:5672: RabbitMQ rows skipped.")
    facts = machine_facts(broker, amqp)
    settings = {"quick": args.quick, "runs": ctx.runs, "figure 1 rounds": ctx.rounds,
                "drain tasks": ctx.drain_tasks,
                "tasks-1m": args.tasks_1m, "figures": ",".join(map(str, args.figures)),
                "redis db": args.redis_db}
    client = redis.Redis.from_url(broker)
    client.flushdb()
    rows: list[Row] = []
    failed: list[int] = []
    started = time.monotonic()
    try:
        for figure in args.figures:
            log(f"figure {figure}: {MODULES[figure]}")
            module = importlib.import_module(f"benchmarks.{MODULES[figure]}")
            try:
                rows += module.run(ctx)
            except Exception:  # noqa: BLE001 - one broken figure must not lose the others
                failed.append(figure)
                error = traceback.format_exc()
                log(f"figure {figure} failed:\n{error}")
                ctx.notes.append(f"Figure {figure} FAILED: {error.strip().splitlines()[-1]}")
            finally:
                reap_all()
    finally:
        reap_all()
        client.flushdb()
        client.close()
    settings["seconds"] = round(time.monotonic() - started)
    md_path, json_path = write_results(args.out, facts, rows, settings, ctx.notes)
    print(md_path.read_text())
    log(f"wrote {md_path} and {json_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        reap_all()
        sys.exit(130)
