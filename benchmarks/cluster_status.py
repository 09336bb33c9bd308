"""Figure 3: the status of a 4-worker cluster, celery-observe vs ``celery inspect``.

Four observed prefork workers (``-c 1``) share a queue and a control exchange. Asked
alternately, one sample each per round: the command lines as new processes (as a person
or a cron job runs them), and the two Python calls in this process with a client that
already knows the workers (as a dashboard or a service holds one). ``Cluster`` is built
with ``use_cache=False`` so every call is a real broadcast; figure 5 measures the cache.
The start-up floor (``celery -A app observe --help``: interpreter, Celery and app imports,
no broker) is what no broadcast can win back: ``observe status`` and ``observe health``
are measured against it, by the median of their differences to it round by round. The
command lines keep their worker hint (RabbitMQ) in a folder of this run; the first call,
which has none yet, is a warm-up outside the samples.
"""

from __future__ import annotations

import tempfile

from benchmarks.common import (
    Context,
    bench_env,
    celery_command,
    cleanup_amqp,
    client_app,
    cluster_workers,
    log,
    running,
    time_command,
    timed,
)
from benchmarks.results import (
    Row,
    median,
)
from celery_observe import Cluster

WORKERS = 4
GOAL_MS = 100.0
RATIO_GOAL = 10.0
#: A command line's goal: at most this much slower than the start-up floor.
ABOVE_FLOOR_GOAL_MS = 100.0
COMMANDS = {"cli_observe": ("observe", "status"), "cli_health": ("observe", "health"),
            "cli_inspect": ("inspect", "active"), "cli_floor": ("observe", "--help")}


def _measure(ctx: Context, broker: str, broker_name: str, rounds: int) -> list[Row]:
    queue = ctx.unique("status")
    workers = cluster_workers(broker, queue, WORKERS)
    hints = tempfile.TemporaryDirectory(prefix="observe-bench-hints-")
    env = {**bench_env(broker, queue, 0), "XDG_CACHE_HOME": hints.name}
    app = client_app(broker, queue)
    cluster = Cluster(app, use_cache=False)
    samples: dict[str, list[float]] = {key: [] for key in (*COMMANDS, "api_observe",
                                                           "api_inspect")}
    problems: set[str] = set()
    try:
        with running(*workers):
            first = cluster.status()  # discovery: learns the 4 workers
            if first["workers_online"] != WORKERS:
                problems.add(f"discovery found {first['workers_online']} workers")
            time_command(celery_command(*COMMANDS["cli_observe"]), env)  # leaves its hint
            for number in range(rounds):
                for key, command in COMMANDS.items():
                    seconds, code, output = time_command(celery_command(*command), env)
                    samples[key].append(seconds * 1000)
                    if code != 0:
                        problems.add(f"{key} exit {code}: {output.strip()[-200:]}")
                    elif key == "cli_observe" and f"{WORKERS} worker(s) online" not in output:
                        problems.add(f"observe status did not list {WORKERS} workers")
                    elif key == "cli_health" and f"workers: {WORKERS}" not in output:
                        problems.add(f"observe health did not count {WORKERS} workers")
                for _ in range(10):
                    status, seconds = timed(cluster.status)
                    samples["api_observe"].append(seconds * 1000)
                    if status["workers_online"] != WORKERS:
                        problems.add(f"Cluster.status saw {status['workers_online']}")
                replies, seconds = timed(lambda: app.control.inspect().active())
                samples["api_inspect"].append(seconds * 1000)
                if len(replies or {}) != WORKERS:
                    problems.add(f"inspect().active() got {len(replies or {})} replies")
                log(f"fig 3 {broker_name} round {number + 1}/{rounds}: "
                    f"observe status {samples['cli_observe'][-1]:.0f} ms, health "
                    f"{samples['cli_health'][-1]:.0f} ms, floor "
                    f"{samples['cli_floor'][-1]:.0f} ms, inspect active "
                    f"{samples['cli_inspect'][-1]:.0f} ms, Cluster.status "
                    f"{median(samples['api_observe']):.1f} ms, inspect().active() "
                    f"{samples['api_inspect'][-1]:.0f} ms")
    finally:
        cluster.close()
        app.close()
        hints.cleanup()
        if broker_name == "RabbitMQ":
            cleanup_amqp(queue)
    note = "; ".join(sorted(problems))
    floor = median(samples["cli_floor"])
    cli_ratio = median(samples["cli_inspect"]) / median(samples["cli_observe"])
    api_ratio = median(samples["api_inspect"]) / median(samples["api_observe"])
    goal = f"< {GOAL_MS:g} ms, ≥ {RATIO_GOAL:g}x faster"
    prefix = f"{broker_name}: "

    def command_line(key: str, label: str) -> Row:
        # round by round: a process start here drifts by 100 ms and more over a minute
        above = median(a - b for a, b in zip(samples[key], samples["cli_floor"], strict=True))
        return Row(3, prefix + f"celery -A app {label} (CLI)", "ms", samples[key],
                   median(samples[key]) / floor, "start-up floor",
                   f"≤ floor + {ABOVE_FLOOR_GOAL_MS:g} ms", above <= ABOVE_FLOOR_GOAL_MS,
                   note or f"floor {above:+.0f} ms; "
                           f"{median(samples['cli_inspect']) / median(samples[key]):.1f}x "
                           "faster than inspect active")

    return [
        command_line("cli_observe", "observe status"),
        command_line("cli_health", "observe health"),
        Row(3, prefix + "celery -A app inspect active (CLI)", "ms", samples["cli_inspect"],
            cli_ratio, "observe status", "", None, "waits its whole 1 s reply timeout"),
        Row(3, prefix + "CLI start-up floor: celery -A app observe --help", "ms",
            samples["cli_floor"], 1.0, "itself", "", None,
            "no broker: interpreter + imports only"),
        Row(3, prefix + "Cluster(app).status() in-process", "ms", samples["api_observe"], 1.0,
            "itself", goal, median(samples["api_observe"]) < GOAL_MS and api_ratio >= RATIO_GOAL,
            f"{api_ratio:.0f}x faster than inspect().active(); workers known, no cache"),
        Row(3, prefix + "app.control.inspect().active() in-process", "ms",
            samples["api_inspect"], api_ratio, "Cluster.status()", "", None,
            "waits its whole 1 s reply timeout"),
    ]


def run(ctx: Context) -> list[Row]:
    rounds = 1 if ctx.quick else 15
    rows = _measure(ctx, ctx.redis, "Redis", rounds)
    if ctx.quick:
        ctx.notes.append("Figure 3 (quick mode): Redis only, one round.")
    elif ctx.amqp is not None:
        rows += _measure(ctx, ctx.amqp, "RabbitMQ", rounds)
    return rows
