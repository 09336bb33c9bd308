"""Run the task-processing example: two observed workers, beat, and a realistic load.

    python examples/taskprocessing/run.py                 # embedded broker; Ctrl-C stops
    python examples/taskprocessing/run.py --broker redis://127.0.0.1:6379/0
    python examples/taskprocessing/run.py --rounds 2 --once --port 0

Worker "interactive" consumes high_priority, cache_operations and default (prefork);
worker "batch" consumes analytics and low_priority (threads) and runs beat. Nobody consumes
search_index, where one task is routed: the cluster view reports it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery_observe import Cluster
    from celery_observe.testing import ObservedWorker

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

WORKERS = {  # name: (queues, pool, extra arguments)
    "interactive": ("high_priority,cache_operations,default", "prefork", ()),
    "batch": ("analytics,low_priority", "threads", ("--beat",)),
}
APP = "examples.taskprocessing.app"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", help="a broker URL (default: the embedded broker)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of load (15 tasks each)")
    parser.add_argument("--once", action="store_true", help="stop the workers after the report")
    parser.add_argument("--port", type=int, default=9541,
                        help="the first worker's HTTP port, the next one's is one more "
                             "(0: free ports)")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "celery-observe-taskprocessing",
                        help="the embedded broker's folder (emptied first)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    env = {"TASKPROCESSING_DATA_DIR": str(args.data_dir),
           "TASKPROCESSING_RETRY_BACKOFF": "1"}  # retries after 1 s, 2 s, 4 s (the seed: 60)
    if args.broker:
        env["CELERY_BROKER_URL"] = args.broker  # Celery's own variable: app and workers
    else:
        shutil.rmtree(args.data_dir, ignore_errors=True)  # a fresh embedded broker
    os.environ.update(env)

    from celery_observe import Cluster
    from celery_observe.testing import ObservedWorker, reap_all, wait_until
    from examples.taskprocessing.app import UNCONSUMED, app
    from examples.taskprocessing.load import (
        OUTCOMES_PER_ROUND,
        UNCONSUMED_PER_ROUND,
        send_round,
    )

    workers = [
        ObservedWorker(APP, app.conf.broker_url, queues, pool=pool, concurrency=2,
                       hostname=f"{name}@localhost", cwd=ROOT, env=env,
                       port=0 if args.port == 0 else args.port + index,
                       extra_args=extra,
                       log_prefix=f"taskprocessing-{name}-")
        for index, (name, (queues, pool, extra)) in enumerate(WORKERS.items())]
    try:
        print(f"Starting workers {', '.join(WORKERS)} on {Cluster(app).broker_url} ...")
        for worker in workers:
            worker.launch()
        for worker in workers:
            worker.wait_ready(60)

        sent = sum(send_round() for _ in range(args.rounds))
        expected = {status: count * args.rounds for status, count in OUTCOMES_PER_ROUND.items()}
        print(f"Sent {sent} tasks in {args.rounds} rounds; waiting for "
              f"{sum(expected.values())} outcomes ...")

        def counted() -> dict[str, int]:
            totals: dict[str, int] = {}
            for worker in workers:
                status = json.loads(worker.get("/status")[2])
                for outcome, count in status["counts"].items():
                    totals[outcome] = totals.get(outcome, 0) + count
            return totals

        wait_until(lambda: sum(counted().values()) >= sum(expected.values()), 60,
                   "every outcome of the load")
        print("\nOutcomes counted by the workers (/status):",
              json.dumps(dict(sorted(counted().items()))))
        print(f"  expected {json.dumps(expected, sort_keys=True)}, and "
              f"{UNCONSUMED_PER_ROUND * args.rounds} waiting in {UNCONSUMED}")
        with Cluster(app) as cluster:
            report(workers, cluster)
        where_to_look(workers, {key: value for key, value in env.items()
                                if key != "TASKPROCESSING_RETRY_BACKOFF"})
        if not args.once:
            print("\nThe workers keep running; press Ctrl-C to stop them.")
            for worker in workers:
                if worker.process is not None:
                    worker.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for worker in workers:
            if worker.process is not None:
                worker.stop()
        reap_all()


def report(workers: list[ObservedWorker], cluster: Cluster) -> None:
    for worker in workers:
        counts = json.loads(worker.get("/status")[2])["counts"]
        shown = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v)
        print(f"  {worker.hostname}: {shown}")
    print("\nQueues (Cluster.queues()):")
    for name, queue in sorted(cluster.queues()["queues"].items()):
        note = "  <- messages and no consumer" if queue["unconsumed"] else ""
        print(f"  {name:17} length={queue['length']} "
              f"consumers={len(queue['consumers'])}{note}")
    print("\nThe customer label (celery_monitored_task_completed_total on "
          f"{workers[0].hostname}):")
    for line in sorted(workers[0].get("/metrics")[2].decode().splitlines()):
        if line.startswith("celery_monitored_task_completed_total{"):
            print("  " + line)


def where_to_look(workers: list[ObservedWorker], env: dict[str, str]) -> None:
    """The endpoints, and the commands that reach this example's broker."""
    prefix = "".join(f"{key}={value} " for key, value in sorted(env.items()))
    print("\nLook for yourself:")
    for worker in workers:
        print(f"  curl {worker.url('/metrics')}    ({worker.hostname}; also /healthz "
              "/readyz /status)")
    print(f"  {prefix}celery -A {APP} observe status")
    if importlib.util.find_spec("fastapi") and importlib.util.find_spec("uvicorn"):
        print(f"  {prefix}celery -A {APP} observe serve --port 8000   # the cluster API: "
              "curl localhost:8000/api/v1/celery/status")
    else:
        print("  pip install 'celery-observe[api]' for the cluster HTTP API "
              "(celery observe serve)")


if __name__ == "__main__":
    main()
