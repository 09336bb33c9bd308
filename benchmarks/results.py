"""Statistics, the results table (markdown and JSON) and the machine's facts."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import redis


def summarize(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"n": len(ordered), "median": statistics.median(ordered), "min": ordered[0],
            "max": ordered[-1], "p95": p95}


@dataclass
class Row:
    """One line of the results table."""

    figure: int
    variant: str
    unit: str
    values: list[float]
    ratio: float | None = None
    versus: str = ""  # what the ratio divides by
    goal: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def stats(self) -> dict[str, float]:
        return summarize(self.values)

    def as_dict(self) -> dict[str, Any]:
        return {"figure": self.figure, "variant": self.variant, "unit": self.unit,
                **self.stats, "values": self.values, "ratio": self.ratio,
                "ratio_versus": self.versus, "goal": self.goal, "met": self.met,
                "note": self.note}


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


FIGURES = {
    1: "Worker throughput, no-op task",
    2: "Liveness probe latency",
    3: "Cluster status, 4 workers",
    4: "Scrape cost vs series count",
    5: "Cached status, hit vs miss",
    6: "Memory (main-process RSS)",
    7: "Cluster HTTP API",
    8: "Cluster client at scale",
}


def render_markdown(facts: dict[str, Any], rows: Sequence[Row], settings: dict[str, Any],
                    notes: Sequence[str]) -> str:
    lines = ["# celery-observe benchmark results", "",
             f"Run {facts['date']} on {facts['machine']}.", "",
             "| machine fact | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in facts.items()
              if key not in {"date", "machine"}]
    lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), "",
              "Median, min and max over the runs or samples (n); the ratio divides the "
              "median by the median named in *vs*.", "",
              "| figure | variant | median | min | max | unit | n | ratio | vs | goal | met |"
              " note |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        stats = row.stats
        met = "-" if row.met is None else ("yes" if row.met else "**NO**")
        lines.append(
            f"| {row.figure}. {FIGURES.get(row.figure, '')} | {row.variant} | "
            f"{fmt(stats.get('median'))} | {fmt(stats.get('min'))} | {fmt(stats.get('max'))} | "
            f"{row.unit} | {int(stats.get('n', 0))} | {fmt(row.ratio)} | {row.versus} | "
            f"{row.goal} | {met} | {row.note} |")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_results(out: Path, facts: dict[str, Any], rows: Sequence[Row],
                  settings: dict[str, Any], notes: Sequence[str]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        figures.setdefault(str(row.figure), []).append(row.as_dict())
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps({"machine": facts, "settings": settings,
                                     "figures": figures, "notes": list(notes)}, indent=2) + "\n")
    md_path.write_text(render_markdown(facts, rows, settings, notes))
    return md_path, json_path


# --- machine facts -------------------------------------------------------------------------

def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "unknown"


def machine_facts(redis_broker: str, amqp_broker: str | None) -> dict[str, Any]:
    """Cores, CPU, memory, Python and library versions, broker server versions."""
    import platform

    try:
        client = redis.Redis.from_url(redis_broker)
        redis_version = str(client.info("server").get("redis_version"))
        client.close()
    except redis.RedisError as exc:
        redis_version = f"unreachable ({exc})"
    rabbit_version = "not reachable"
    if amqp_broker is not None:
        from celery import Celery

        probe = Celery("benchmark-facts", broker=amqp_broker, set_as_current=False)
        try:
            with probe.connection_for_write(connect_timeout=3) as connection:
                connection.connect()
                version = connection.connection.server_properties.get("version")
                rabbit_version = version.decode() if isinstance(version, bytes) else str(version)
        except Exception as exc:  # noqa: BLE001 - a fact, not a failure
            rabbit_version = f"unreachable ({exc})"
        finally:
            probe.close()
    load = os.getloadavg()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} ({platform.system()} {platform.machine()})",
        "cores (logical / physical)": f"{os.cpu_count()} / {psutil.cpu_count(logical=False)}",
        "cpu": _cpu_model(),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "celery": _version("celery"),
        "kombu": _version("kombu"),
        "billiard": _version("billiard"),
        "prometheus_client": _version("prometheus-client"),
        "psutil": _version("psutil"),
        "redis-py": _version("redis"),
        "flower": _version("flower"),
        "celery-observe": _version("celery-observe"),
        "redis-server": redis_version,
        "rabbitmq-server": rabbit_version,
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in load),
    }
