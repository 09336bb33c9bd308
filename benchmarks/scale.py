"""Figure 8: the cluster client at scale, 50 real workers and 1,000 simulated ones.

50 observed solo workers share a queue and a control exchange on Redis (as figure 7's
big cluster); before the other 49 start, the first is asked alone. 1,000 workers are
simulated by one helper process (:mod:`benchmarks.simulated_workers`) that answers remote
control under 1,000 hostnames exactly as workers do (on RabbitMQ one pidbox queue per
hostname, on Redis one subscriber connection per hostname), with the replies of a real
observed worker captured in this run; the same simulator with 50 hostnames on Redis
checks it against the 50 real workers.

Each cluster is asked by a client process of its own (``python -m benchmarks.scale
client``), so its resident memory is the memory of a process holding a ``Cluster``: it
calls ``Cluster(app, use_cache=False).status()`` until one call found every worker
(discovery), then times the calls, and last times kombu's ``broadcast(limit=N)`` (the time
until the N-th reply, with no wait for newcomers). The workers' (or the simulator's) CPU
per broadcast is read with psutil around the client, less what they spend idle.

One worker's ``/metrics`` (text format) is read when it runs alone and again beside the
other 49, each after that cluster's broadcasts: the series a Prometheus scrapes from a
worker must not grow with the cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):  # run as a script: import ``benchmarks`` from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import psutil
import redis

from benchmarks.appenv import BROKER_ENV, QUEUE_ENV
from benchmarks.common import (
    REPO,
    Context,
    bench_env,
    cleanup_amqp,
    client_app,
    cluster_workers,
    http_get,
    log,
    running,
    timed,
)
from benchmarks.results import Row, median, summarize
from benchmarks.simulated_workers import simulated
from celery_observe import Cluster
from celery_observe.testing import end_process, parse_metrics, spawn

REAL_WORKERS, QUICK_REAL_WORKERS = 50, 5
SIMULATED, QUICK_SIMULATED = 1000, 50
REAL_GOAL_MS, SIMULATED_GOAL_MS, RSS_GOAL_MB = 100.0, 1000.0, 100.0
#: The commands whose replies the simulator plays back (what Cluster asks).
COMMANDS = {"observe_status": {"use_cache": False}, "observe_health": {"use_cache": False},
            "observe_tasks": {"use_cache": False}, "observe_summary": {"use_cache": False},
            "observe_history": {}}
#: Status calls a client may need to find every worker (each collects what came in time).
DISCOVERY_CALLS = 10
#: 50 workers start at once on this machine's 2 cores (~1 s of CPU each).
BIG_READY_TIMEOUT = 300.0
CLIENT_TIMEOUT = 600.0
T = TypeVar("T")


@dataclass(frozen=True)
class Point:
    """One cluster size as measured: what grows with the number of workers."""

    label: str
    workers: int
    client_cpu_ms: float  # per status() call
    workers_cpu_ms: float  # per broadcast, all workers (or simulators) together


# --- the client process --------------------------------------------------------------------

def client_main(out: str, expect: int, samples: int, limit_samples: int) -> int:
    """Ask the cluster of this environment's queue; write what was measured to ``out``."""
    me = psutil.Process()
    app = client_app(os.environ[BROKER_ENV], os.environ[QUEUE_ENV])
    rss_before = me.memory_info().rss
    cluster = Cluster(app, use_cache=False)
    discovery: list[list[float]] = []
    for _ in range(DISCOVERY_CALLS):
        status, seconds = timed(cluster.status)
        discovery.append([seconds * 1000, status["workers_online"]])
        if status["workers_online"] >= expect:
            break
    calls: list[tuple[float, float, int, int, int]] = []  # wall, CPU, online, missing, errors
    for _ in range(samples):
        started = time.process_time()
        status, seconds = timed(cluster.status)
        calls.append((seconds * 1000, (time.process_time() - started) * 1000,
                      status["workers_online"], len(status["missing"]), len(status["errors"])))
    answer_bytes = len(json.dumps(status))
    rss_after = me.memory_info().rss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    broadcasts = cluster.broadcasts
    cluster.close()
    last_reply: list[float] = []
    got: list[int] = []
    for number in range(limit_samples + 1):  # the first connects Celery's producer pool
        replies, seconds = timed(lambda: app.control.broadcast(
            "observe_status", arguments={"use_cache": False}, reply=True, limit=expect,
            timeout=5.0))
        if number:
            last_reply.append(seconds * 1000)
            got.append(len(replies or []))
    app.close()
    columns = ("wall_ms", "cpu_ms", "online", "missing", "errors")
    Path(out).write_text(json.dumps({
        **dict(zip(columns, map(list, zip(*calls, strict=True)), strict=True)),
        "discovery": discovery, "answer_bytes": answer_bytes,
        "rss_before": rss_before, "rss_after": rss_after, "rss_peak": peak,
        "broadcasts": broadcasts + limit_samples + 1, "last_reply_ms": last_reply,
        "limit_replies": got}))
    return 0


def _ask_cluster(broker: str, queue: str, expect: int, samples: int,
                 limit_samples: int) -> dict[str, Any]:
    """Run :func:`client_main` in a process of its own and return what it measured."""
    handle, name = tempfile.mkstemp(prefix="observe-bench-scale-client-", suffix=".log")
    os.close(handle)
    out = Path(name).with_suffix(".json")
    process = spawn([sys.executable, "-m", "benchmarks.scale", "client", str(out), str(expect),
                     str(samples), str(limit_samples)], Path(name),
                    bench_env(broker, queue, 0), REPO, remove_log=True)
    try:
        try:
            code: int | None = process.wait(CLIENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        output = Path(name).read_text(errors="replace")
    finally:
        end_process(process)
    try:
        if code != 0 or not out.exists():
            raise RuntimeError(f"the client process exited with {code}:\n{output[-3000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
    finally:
        with contextlib.suppress(OSError):
            out.unlink()
    return result


# --- measuring around the client ----------------------------------------------------------

def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _busy_cpu(processes: Sequence[psutil.Process], idle: float,
              ask: Callable[[], T]) -> tuple[T, list[float]]:
    """``ask()``, and the CPU seconds each process spent meanwhile beyond its idle rate
    (measured over ``idle`` seconds first)."""
    before = [_cpu_seconds(p) for p in processes]
    started = time.monotonic()
    time.sleep(idle)
    rates = [(_cpu_seconds(p) - b) / (time.monotonic() - started)
             for p, b in zip(processes, before, strict=True)]
    before = [_cpu_seconds(p) for p in processes]
    started = time.monotonic()
    result = ask()
    took = time.monotonic() - started
    return result, [max(0.0, _cpu_seconds(p) - b - rate * took)
                    for p, b, rate in zip(processes, before, rates, strict=True)]


def _scrape(port: int | None) -> tuple[int, int, set[Any]]:
    """(samples, bytes, series) of a worker's ``/metrics`` page in the text format."""
    status, body, _seconds, _headers = http_get(port, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    text = body.decode()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return len(lines), len(body), set(parse_metrics(text))


def _forget_redis(broker: str, queue: str) -> None:
    """Delete what a run on ``queue`` left in the run's Redis database."""
    client = redis.Redis.from_url(broker)
    try:
        for key in client.scan_iter(match=f"*{queue}*"):
            client.delete(key)
        for member, _score in client.zscan_iter("_kombu.binding_deadlines"):
            if queue in member.decode(errors="replace"):
                client.zrem("_kombu.binding_deadlines", member)
    finally:
        client.close()


@contextlib.contextmanager
def _cleaned(broker_name: str, broker: str, queue: str) -> Iterator[None]:
    try:
        yield
    finally:
        if broker_name == "RabbitMQ":
            cleanup_amqp(queue)
        else:
            _forget_redis(broker, queue)


# --- what one cluster gives ------------------------------------------------------------------

def _discovery(result: dict[str, Any]) -> str:
    calls = result["discovery"]
    return (f"discovery {len(calls)} call(s): "
            + ", ".join(f"{ms:.0f} ms found {found:.0f}" for ms, found in calls))


def _problems(result: dict[str, Any], expect: int) -> list[str]:
    found = [found for _ms, found in result["discovery"]]
    problems = [] if found and found[-1] >= expect else [f"discovery found {found[-1]:.0f}"]
    if min(result["online"], default=expect) < expect:
        problems.append(f"a call saw {min(result['online'])} of {expect}")
    if any(result["missing"]) or any(result["errors"]):
        problems.append(f"missing up to {max(result['missing'])}, "
                        f"errors up to {max(result['errors'])}")
    if any(got < expect for got in result["limit_replies"]):
        problems.append(f"broadcast(limit) got {min(result['limit_replies'])}")
    return problems


def _cluster_rows(label: str, result: dict[str, Any], expect: int, goal_ms: float | None,
                  cpu_note: str, rss_goal: bool, extra: Sequence[str] = ()) -> list[Row]:
    wall, p50 = result["wall_ms"], median(result["wall_ms"])
    rss, grown = result["rss_after"] / 2**20, (result["rss_after"] - result["rss_before"]) / 2**20
    log(f"fig 8 {label}: status() p50 {p50:.1f} ms, client RSS {rss:.1f} MB")
    last = median(result["last_reply_ms"]) if result["last_reply_ms"] else 0.0
    if expect > 1 and last > 0:  # status() waits for newcomers after the last known reply
        extra = [*extra, f"{p50 / last:.1f}x the time to the last reply (below)"]
    notes = [*_problems(result, expect), *extra, f"p95 {summarize(wall)['p95']:.0f} ms",
             f"client CPU p50 {median(result['cpu_ms']):.1f} ms per call",
             f"answer {result['answer_bytes'] / 1024:,.0f} KB", cpu_note, _discovery(result)]
    rows = [Row(8, f"{label}: Cluster(app).status(), uncached, after discovery", "ms", wall,
                None, "", f"p50 < {goal_ms:,.0f} ms" if goal_ms else "",
                p50 < goal_ms if goal_ms else None, "; ".join(notes))]
    if expect > 1:
        rows.append(Row(8, f"{label}: app.control.broadcast(limit={expect}), to the last reply",
                        "ms", result["last_reply_ms"], None, "", "", None,
                        "kombu stops at the N-th reply; status() then waits as long again "
                        "(up to its 1 s timeout) for workers nobody expected, where the "
                        "broker counts no listeners (RabbitMQ)"))
    rows.append(Row(8, f"{label}: client process RSS after the calls", "MB", [rss], None, "",
                    f"< {RSS_GOAL_MB:g} MB" if rss_goal else "",
                    rss < RSS_GOAL_MB if rss_goal else None,
                    f"a separate process holding the Cluster: {grown:+.1f} MB from before the "
                    f"Cluster was built (interpreter, Celery, kombu: "
                    f"{result['rss_before'] / 2**20:.1f} MB); peak "
                    f"{result['rss_peak'] / 2**20:.1f} MB"))
    return rows


# --- 50 real workers -----------------------------------------------------------------------

def _capture(app: Any) -> dict[str, Any]:
    """The replies of the one worker of ``app``'s control exchange, command by command."""
    replies: dict[str, Any] = {}
    hostname = ""
    with Cluster(app, use_cache=False) as cluster:
        for command, arguments in COMMANDS.items():
            answers, _missing = cluster.ask(command, **arguments)
            if len(answers) != 1:
                raise RuntimeError(f"{command}: expected 1 reply, got {sorted(answers)}")
            (hostname, replies[command]), = answers.items()
    return {"hostname": hostname, "replies": replies}


def _real(ctx: Context, count: int, samples: int, idle: float,
          growth: list[Point]) -> tuple[list[Row], dict[str, Any]]:
    queue = ctx.unique("scale")
    workers = cluster_workers(ctx.redis, queue, count, pool="solo")
    first, others = workers[0], workers[1:]
    app = client_app(ctx.redis, queue)
    limit_samples = 1 if ctx.quick else 5
    try:
        with _cleaned("Redis", ctx.redis, queue), running(first):
            template = {**_capture(app), "queue": queue}
            alone, cpu = _busy_cpu([first.main_process()], idle,
                                   lambda: _ask_cluster(ctx.redis, queue, 1, samples, 1))
            one_cpu = cpu[0] / alone["broadcasts"] * 1000
            scraped_alone = _scrape(first.port)
            with running(*others, timeout=BIG_READY_TIMEOUT):
                log(f"fig 8: {count} solo workers ready")
                processes = [worker.main_process() for worker in workers]
                result, cpu = _busy_cpu(processes, idle, lambda: _ask_cluster(
                    ctx.redis, queue, count, samples, limit_samples))
                scraped_all = _scrape(first.port)
    finally:
        app.close()
    per_worker = [seconds / result["broadcasts"] * 1000 for seconds in cpu]
    label = f"Redis, {count} solo workers"
    rows = _cluster_rows("Redis, 1 solo worker", alone, 1, None,
                         f"the worker's CPU {one_cpu:.1f} ms per broadcast", False)
    rows += _cluster_rows(label, result, count, REAL_GOAL_MS,
                          f"the workers' CPU {sum(per_worker):.0f} ms per broadcast in all",
                          False)
    rows.append(Row(8, f"{label}: each worker's CPU per broadcast", "ms", per_worker, None, "",
                    "", None, f"main process (solo pool), less its idle rate over {idle:g} s; "
                              f"{count} workers on {os.cpu_count()} cores"))
    (n_alone, bytes_alone, series_alone), (n_all, bytes_all, series_all) = (scraped_alone,
                                                                            scraped_all)
    changed = series_alone ^ series_all
    rows += [
        Row(8, "one solo worker's /metrics (text), running alone: samples", "samples",
            [n_alone], None, "", "", None, f"{bytes_alone:,} bytes"),
        Row(8, f"the same worker's /metrics beside {count - 1} others: samples", "samples",
            [n_all], n_all / n_alone, "alone", "equal to alone",
            n_all == n_alone and not changed,
            f"{bytes_all:,} bytes (alone {bytes_alone:,}: values differ in their digits); "
            + (f"series that differ: {sorted(str(key) for key in changed)[:5]}" if changed
               else "the same series, name and labels")),
    ]
    growth += [Point("1 real", 1, median(alone["cpu_ms"]), one_cpu),
               Point(f"{count} real", count, median(result["cpu_ms"]), sum(per_worker))]
    return rows, template


# --- simulated workers ------------------------------------------------------------------------

def _simulate(ctx: Context, broker_name: str, broker: str, template: dict[str, Any],
              hostnames: int, processes: int, samples: int, idle: float,
              goal: bool, growth: list[Point]) -> list[Row]:
    queue = ctx.unique("scale-sim")
    with _cleaned(broker_name, broker, queue), \
            simulated(broker, queue, template, hostnames, processes) as simulators:
        result, cpu = _busy_cpu(simulators, idle, lambda: _ask_cluster(
            broker, queue, hostnames, samples, 1 if ctx.quick else 5))
    share = -(-hostnames // processes)
    per_host = sum(cpu) / result["broadcasts"] / hostnames * 1e6
    label = (f"{broker_name}, {hostnames:,} simulated workers "
             f"({processes} simulator process{'es' if processes > 1 else ''})")
    how = [] if processes == 1 else [f"split: {processes} simulator processes of {share} "
                                     "hostnames, as one missed the goal"]
    growth.append(Point(f"{hostnames:,} simulated on {broker_name}"
                        + (f" ({processes} processes)" if processes > 1 else ""), hostnames,
                        median(result["cpu_ms"]), sum(cpu) / result["broadcasts"] * 1000))
    return _cluster_rows(label, result, hostnames, SIMULATED_GOAL_MS if goal else None,
                         f"the simulator's CPU {sum(cpu) / result['broadcasts'] * 1000:.0f} ms "
                         f"per broadcast ({per_host:.0f} µs per hostname)", goal, how)


def run(ctx: Context) -> list[Row]:
    real = QUICK_REAL_WORKERS if ctx.quick else REAL_WORKERS
    samples, idle = (2, 0.5) if ctx.quick else (30, 3.0)
    growth: list[Point] = []
    rows, template = _real(ctx, real, samples, idle, growth)
    brokers = [("Redis", ctx.redis)] + ([] if ctx.quick or ctx.amqp is None
                                        else [("RabbitMQ", ctx.amqp)])
    if ctx.quick:
        rows += _simulate(ctx, "Redis", ctx.redis, template, QUICK_SIMULATED, 1, samples,
                          idle, True, growth)
        ctx.notes.append(f"Figure 8 (quick mode): {real} real workers, not {REAL_WORKERS}; "
                         f"{QUICK_SIMULATED} simulated on Redis only, not {SIMULATED:,} on "
                         f"Redis and RabbitMQ; {samples} samples.")
    else:
        rows += _simulate(ctx, "Redis", ctx.redis, template, real, 1, 20, idle, False, growth)
        for broker_name, broker in brokers:
            found = _simulate(ctx, broker_name, broker, template, SIMULATED, 1, 20, idle,
                              True, growth)
            rows += found
            if found[0].met is False:  # the simulator may be the bottleneck: split it
                rows += _simulate(ctx, broker_name, broker, template, SIMULATED, 2, 20, idle,
                                  True, growth)
    ctx.notes.append(_growth_note(growth, template))
    return rows


def _growth_note(points: Sequence[Point], template: dict[str, Any]) -> str:
    """What grows with the number of workers, per uncached ``status()``, for README."""
    reply = len(json.dumps({template["hostname"]: template["replies"]["observe_status"]}))
    sizes = ", ".join(f"{point.label}: {point.workers * reply / 1024:,.1f} KB"
                      for point in points)
    one, most = points[0], max(points, key=lambda point: point.workers)
    slope = (most.client_cpu_ms - one.client_cpu_ms) / max(1, most.workers - one.workers)
    client = (", ".join(f"{point.label}: {point.client_cpu_ms:,.1f} ms" for point in points)
              + f"; about {slope * 1000:,.0f} µs more per worker")
    workers = ", ".join(f"{point.label}: {point.workers_cpu_ms:,.0f} ms "
                        f"({point.workers_cpu_ms / point.workers:.2f} ms a worker)"
                        for point in points)
    return ("Figure 8, what grows with the number of workers, per uncached status(): the "
            f"replies' JSON bodies ({reply:,} bytes a worker; {sizes}); the client's CPU, "
            f"decoding and merging them ({client}); the workers' CPU per broadcast, all "
            f"together ({workers}). A real worker answers on its own CPU; here every worker "
            f"shares the client's {os.cpu_count()} cores, and one simulator process answers "
            "for a hostname in a fraction of a real worker's CPU, so the simulated figures "
            "measure the client and the broker more than the workers.")


if __name__ == "__main__":
    if sys.argv[1:2] != ["client"]:
        sys.exit("usage: python -m benchmarks.scale client OUT EXPECT SAMPLES LIMIT_SAMPLES")
    out_path, expected, sample_count, limits = sys.argv[2:6]
    sys.exit(client_main(out_path, int(expected), int(sample_count), int(limits)))
