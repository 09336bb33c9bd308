"""``celery -A proj observe ...``: the cluster from the command line.

Celery loads this group through the ``celery.commands`` entry point
(:mod:`celery_observe.commands`) on every ``celery`` invocation, so this module imports
nothing heavy until a command runs.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from ..shapes import STATUSES
from .verdict import EXIT_CODES, UNHEALTHY

if TYPE_CHECKING:
    from ..shapes import (
        ClusterHealth,
        ClusterHistory,
        ClusterStatus,
        ClusterSummary,
        ClusterTasks,
        QueueReport,
    )
    from .client import Cluster


def _cluster(ctx: click.Context) -> Cluster:
    """A client for the app given with -A, closed when the command ends."""
    from .client import Cluster  # loaded when a command runs, not on every `celery` call
    from .hints import WorkerHints

    app = getattr(ctx.obj, "app", None)
    if app is None:
        raise click.UsageError("name the app: celery -A proj observe ...")
    cluster = Cluster(app, timeout=ctx.params["timeout"],
                      discovery_timeout=ctx.params["discovery_timeout"], use_cache=False,
                      queues=ctx.params.get("queues", ()), hints=WorkerHints.for_app(app))
    ctx.call_on_close(cluster.close)
    return cluster


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain text table with columns as wide as their widest cell."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row]
                                           for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str) if as_json
               else render(data))


def _run(ctx: click.Context, fetch: Callable[[Cluster], Any]) -> Any:
    from .client import BrokerUnreachableError

    try:
        return fetch(_cluster(ctx))
    except BrokerUnreachableError as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(2)


common = [
    click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts."),
    click.option("--timeout", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
                 help="Seconds to wait for a known worker that does not answer."),
    click.option("--discovery-timeout", type=click.FloatRange(min=0.01), default=0.25,
                 show_default=True, help="Seconds to collect replies when no worker is known."),
    click.option("--queue", "-Q", "queues", multiple=True, metavar="NAME",
                 help="Also report this queue (repeatable); the app's configured queues and "
                      "the workers' are always reported."),
]


def with_common(fun: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(common):
        fun = option(fun)
    return fun


@click.group(name="observe")
def observe() -> None:
    """Status, health, tasks and queues of all workers started with --observe."""


def _render_health(data: ClusterHealth, verbose: bool) -> str:
    lines = [f"{data['status'].upper()}: {data['message']}",
             f"workers: {data['workers']['worker_count']}"
             + (f" ({', '.join(data['workers']['active_workers'])})" if verbose else ""),
             "queues: " + (", ".join(f"{name}={depth}" for name, depth in data["queues"].items())
                           or "-")]
    if verbose:
        for hostname, report in sorted(data.get("details", {}).items()):
            lines.append(f"  {hostname}: alive={report.get('alive')} ready={report.get('ready')}"
                         f" active={report.get('active_count')}"
                         f" reserved={report.get('reserved_count')}")
    lines += [f"-> {advice}" for advice in data["recommendations"]]
    return "\n".join(lines)


@observe.command()
@with_common
@click.option("--verbose", "-v", is_flag=True, help="Show every worker.")
@click.option("--queue-threshold", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Queue depth above which the cluster is degraded.")
@click.pass_context
def health(ctx: click.Context, as_json: bool, timeout: float, discovery_timeout: float,
           queues: tuple[str, ...], verbose: bool, queue_threshold: int) -> None:
    """Healthy (exit 0), degraded (exit 1) or unhealthy (exit 2): usable as an exec probe."""
    cluster = _cluster(ctx)
    cluster.queue_threshold = queue_threshold
    data = cluster.health()
    _emit(data, as_json, lambda d: _render_health(d, verbose))
    ctx.exit(EXIT_CODES.get(data["status"], EXIT_CODES[UNHEALTHY]))


def _mebibytes(size: int | None) -> str | None:
    return None if size is None else f"{size / 2**20:.0f}MiB"


def _uptime(seconds: float | None) -> str | None:
    """42s, 12m05s, 3h05m, 2d03h: the two largest units."""
    if seconds is None:
        return None
    whole = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                      ("m", 60, "s", 1)):
        if whole >= size:
            return f"{whole // size}{unit}{whole % size // sub_size:02d}{sub}"
    return f"{whole}s"


def _render_workers(data: ClusterStatus) -> str:
    rows: list[tuple[Any, ...]] = [
        (hostname, w.get("pool"), w.get("concurrency"), w.get("active_count"),
         w.get("reserved_count"), w.get("counts", {}).get("success"),
         w.get("counts", {}).get("failure"), "yes" if w.get("ready") else "NO",
         w.get("http_port"), _mebibytes(w.get("rss_bytes")), _uptime(w.get("uptime_seconds")))
        for hostname, w in sorted(data["workers"].items())]
    rows += [(hostname, "missing", None, None, None, None, None, "NO", None, None, None)
             for hostname in data["missing"]]
    if not rows:
        return "No observed workers answered."
    return table(rows, ["WORKER", "POOL", "CONC", "ACTIVE", "RESERVED", "SUCCESS", "FAILURE",
                        "READY", "PORT", "RSS", "UPTIME"])


def _render_queues(queues: dict[str, QueueReport]) -> str:
    rows = [(name, "?" if queue["length"] is None else queue["length"],
             "-" if queue["oldest_message_age_seconds"] is None
             else f"{queue['oldest_message_age_seconds']:.1f}s",
             ", ".join(queue["consumers"]) or ("NONE: start a worker with -Q " + name
                                                if queue["unconsumed"] else "-"))
            for name, queue in queues.items()]
    return table(rows, ["QUEUE", "WAITING", "OLDEST", "CONSUMERS"])


def _render_status(data: ClusterStatus) -> str:
    totals = data["totals"]
    head = (f"{data['workers_online']} worker(s) online, {totals['active']} active of "
            f"{totals['concurrency']} slots, {totals['reserved']} reserved  "
            f"(broker {data['broker']})")
    return "\n\n".join([head, _render_workers(data), _render_queues(data["queues"])])


@observe.command()
@with_common
@click.pass_context
def status(ctx: click.Context, as_json: bool, timeout: float, discovery_timeout: float,
           queues: tuple[str, ...]) -> None:
    """The cluster at a glance: workers, their load and queue depths."""
    _emit(_run(ctx, lambda cluster: cluster.status()), as_json, _render_status)


@observe.command()
@with_common
@click.pass_context
def workers(ctx: click.Context, as_json: bool, timeout: float, discovery_timeout: float,
            queues: tuple[str, ...]) -> None:
    """One line per worker."""
    data = _run(ctx, lambda cluster: cluster.status())
    _emit({"workers": data["workers"], "missing": data["missing"]} if as_json else data,
          as_json, _render_workers)


def _render_tasks(data: ClusterTasks) -> str:
    rows = [(kind, task["worker"], task["name"], task["id"],
             task.get("eta") or _clock(task.get("time_start")))
            for kind in ("running", "reserved", "scheduled") for task in data[kind]]
    return table(rows, ["STATE", "WORKER", "TASK", "ID", "SINCE/ETA"]) if rows else "No tasks."


def _clock(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


@observe.command()
@with_common
@click.pass_context
def tasks(ctx: click.Context, as_json: bool, timeout: float, discovery_timeout: float,
          queues: tuple[str, ...]) -> None:
    """Running, reserved and scheduled tasks (arguments redacted unless workers opt in)."""
    _emit(_run(ctx, lambda cluster: cluster.tasks()), as_json, _render_tasks)


@observe.command()
@with_common
@click.pass_context
def queues(ctx: click.Context, as_json: bool, timeout: float, discovery_timeout: float,
           queues: tuple[str, ...]) -> None:
    """Every configured or consumed queue: messages waiting, and which workers consume it."""
    _emit(_run(ctx, lambda cluster: cluster.queues()), as_json,
          lambda data: _render_queues(data["queues"]))


def _render_history(data: ClusterHistory) -> str:
    rows = [(_clock(t["ended"]), t["worker"], t["name"], t["state"], t["error_type"],
             None if t["duration_seconds"] is None else f"{t['duration_seconds']:.3f}s",
             t["id"]) for t in data["tasks"]]
    return (table(rows, ["ENDED", "WORKER", "TASK", "STATE", "ERROR", "DURATION", "ID"])
            if rows else "No finished tasks yet.")


@observe.command()
@with_common
@click.option("--limit", "-n", type=click.IntRange(1, 1_000_000), default=20, show_default=True,
              help="How many of the latest finished tasks to show.")
@click.option("--task", "-t", "task", metavar="NAME",
              help="Only this task name, or a glob such as 'proj.billing.*'.")
@click.option("--state", "-s", type=click.Choice(STATUSES), help="Only tasks that ended so.")
@click.option("--id", "id_prefix", metavar="PREFIX", help="Only task ids starting so.")
@click.option("--last", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Only tasks that ended in the last SECONDS.")
@click.pass_context
def history(ctx: click.Context, as_json: bool, timeout: float, discovery_timeout: float,
            queues: tuple[str, ...], limit: int, task: str | None, state: str | None,
            id_prefix: str | None, last: float | None) -> None:
    """The latest finished tasks over all workers, newest first; searchable."""
    since = None if last is None else time.time() - last
    _emit(_run(ctx, lambda cluster: cluster.history(
        limit, task=task, state=state, id_prefix=id_prefix, since=since)), as_json,
        _render_history)


def _render_summary(data: ClusterSummary) -> str:
    rows = [(worker, name, *(task["counts"].get(status, 0) for status in STATUSES),
             "-" if task["success_rate_percent"] is None else f"{task['success_rate_percent']}%",
             *(_seconds(task["duration_seconds"][p]) for p in ("p50", "p95", "p99")))
            for worker, tasks in sorted(data["workers"].items())
            for name, task in tasks.items()]
    headers = ["WORKER", "TASK", *(status.upper() for status in STATUSES), "SUCCESS%",
               "P50", "P95", "P99"]
    return table(rows, headers) if rows else "No finished tasks yet."


def _seconds(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}s"


@observe.command()
@with_common
@click.pass_context
def summary(ctx: click.Context, as_json: bool, timeout: float, discovery_timeout: float,
            queues: tuple[str, ...]) -> None:
    """Per worker and task: counts by outcome, success rate, p50/p95/p99 duration (over
    each worker's recent history)."""
    _emit(_run(ctx, lambda cluster: cluster.summary()), as_json, _render_summary)


@observe.command()
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Stop after this many refreshes (default: until Ctrl-C).")
@click.option("--timeout", type=click.FloatRange(min=0.01), default=1.0, show_default=True)
@click.option("--discovery-timeout", type=click.FloatRange(min=0.01), default=0.25,
              show_default=True)
@click.pass_context
def top(ctx: click.Context, interval: float, iterations: int | None, timeout: float,
        discovery_timeout: float) -> None:
    """A live view of workers, running tasks and queue depths; Ctrl-C quits."""
    from .client import BrokerUnreachableError

    cluster = _cluster(ctx)
    clear = "\033[H\033[2J" if sys.stdout.isatty() else ""
    shown = 0
    try:
        while iterations is None or shown < iterations:
            try:
                screen = "\n\n".join([
                    f"celery observe top - {datetime.now():%H:%M:%S} (every {interval:g}s)",
                    _render_status(cluster.status()), _render_tasks(cluster.tasks())])
            except BrokerUnreachableError as exc:
                screen = f"Error: {exc}"
            click.echo(clear + screen)
            shown += 1
            if iterations is None or shown < iterations:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


def _token_option(value: str | None) -> str | None:
    from .serve import read_token_file

    return None if value is None else read_token_file(value)


def _prefix_option(value: str) -> str:
    prefix = value.rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise click.BadParameter(f"a path starting with '/', such as /api/v1/celery; got {value!r}")
    return prefix


@observe.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port to listen on; 0 picks a free one (the log names it).")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default is reachable from this machine only, "
                   "because the API shows every worker, queue and task name: listen on "
                   "0.0.0.0 (or a pod's address) deliberately, with --read-token-file or "
                   "behind a proxy.")
@click.option("--token-file", "token", type=click.Path(dir_okay=False), metavar="FILE",
              callback=lambda ctx, param, value: _token_option(value),
              help="File holding the bearer token that turns on revoke, execute and cache "
                   "invalidation (off without it); a file, so the token never shows in `ps`.")
@click.option("--read-token-file", "read_token", type=click.Path(dir_okay=False),
              metavar="FILE", callback=lambda ctx, param, value: _token_option(value),
              help="File holding a bearer token every other endpoint needs too.")
@click.option("--show-results", is_flag=True,
              help="Show task results and tracebacks in /tasks/{id}/status (redacted otherwise).")
@click.option("--execute-allow", "execute_allow", multiple=True, metavar="NAME",
              help="A task POST /tasks/NAME/execute may send (repeatable); none by default.")
@click.option("--prefix", default="/api/v1/celery", show_default=True,
              callback=lambda ctx, param, value: _prefix_option(value),
              help="Path the endpoints are served under.")
@click.option("--rate-limit", type=click.IntRange(min=1), default=120, show_default=True,
              help="Uncached or changing requests per client and minute.")
@click.option("--timeout", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Seconds to wait for a known worker that does not answer.")
@click.option("--discovery-timeout", type=click.FloatRange(min=0.01), default=0.25,
              show_default=True, help="Seconds to collect replies when no worker is known.")
@click.option("--queue-threshold", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Queue depth above which the cluster is degraded.")
@click.option("--queue", "-Q", "queues", multiple=True, metavar="NAME",
              help="Also report this queue (repeatable).")
@click.option("--shared-cache-url", metavar="URL", envvar="CELERY_OBSERVE_SHARED_CACHE_URL",
              help="Redis the API's replicas share cached answers in (redis://host:6379/3), "
                   "so N replicas cause one broadcast per TTL, not N; one database per "
                   "cluster; needs celery-observe[redis]. Give a URL with a password in "
                   "$CELERY_OBSERVE_SHARED_CACHE_URL, which `ps` does not show.")
@click.option("--events-interval", type=click.FloatRange(min=0.1), default=5.0,
              show_default=True, help="Seconds between the dashboard's live updates.")
@click.pass_context
def serve(ctx: click.Context, port: int, address: str, token: str | None,
          read_token: str | None, show_results: bool, execute_allow: tuple[str, ...],
          prefix: str, rate_limit: int, timeout: float, discovery_timeout: float,
          queue_threshold: int, queues: tuple[str, ...], shared_cache_url: str | None,
          events_interval: float) -> None:
    """The cluster HTTP API (the metrics guide's endpoints) on a production server (uvicorn).

    Logs one line per request (method, path, status, ms) and stops gracefully on SIGTERM.
    """
    from . import serve as serving

    app = getattr(ctx.obj, "app", None)
    if app is None:
        raise click.UsageError("name the app: celery -A proj observe serve")
    if execute_allow and token is None:
        raise click.UsageError("--execute-allow needs --token-file: executing tasks is off "
                               "without a token")
    missing = serving.missing_api_dependency()
    if missing is not None:
        click.echo(f"Error: {missing}", err=True)
        ctx.exit(2)
    from .api import ApiSettings

    try:
        settings = ApiSettings(token=token, read_token=read_token, show_results=show_results,
                               execute_allowlist=execute_allow, rate_limit_per_minute=rate_limit,
                               timeout=timeout, discovery_timeout=discovery_timeout,
                               queue_threshold=queue_threshold, queues=queues,
                               shared_cache_url=shared_cache_url,
                               events_interval=events_interval)
    except (ValueError, ImportError) as exc:  # the shared cache's URL, or no redis client
        raise click.UsageError(str(exc)) from None
    serving.serve(app, settings, host=address, port=port, prefix=prefix)
