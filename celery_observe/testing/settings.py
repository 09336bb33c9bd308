"""What a test's observed worker is: its pool, concurrency, broker and queues.

Each setting comes from the test's ``@pytest.mark.observe(...)`` marker, else the command
line (``--observe-pool``), else the ini file (``observe_pool = threads``), else the default.
Solo and threads workers run in the test process (Celery's ``start_worker``); prefork
needs processes of its own, so its worker is a ``celery worker`` subprocess.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IN_PROCESS_POOLS = ("solo", "threads")
SUBPROCESS_POOLS = ("prefork",)
#: The in-process default: kombu's memory transport, polled every 10 ms, so a broadcast is
#: answered in milliseconds (kombu's default poll is 1 s).
MEMORY_BROKER = "memory://localhost/"
#: How the test process tells a subprocess worker (:mod:`.subprocess_app`) which app to
#: import and what configuration to give it (JSON).
APP_ENV = "CELERY_OBSERVE_TEST_APP"
CONF_ENV = "CELERY_OBSERVE_TEST_CONF"


class ObserveSettingsError(ValueError):
    """A setting of the pytest plugin has a value it cannot use."""


@dataclass(frozen=True)
class ObserveSettings:
    """One test's worker, as the marker, command line and ini file describe it."""

    pool: str = "solo"
    concurrency: int = 2
    #: ``""``: the memory broker in-process, a private filesystem broker for a subprocess.
    broker: str = ""
    #: ``""``: with the default broker, one to match it; with your own, your app's backend
    #: (or ``rpc://`` if it has none).
    backend: str = ""
    #: The queues the worker consumes; empty: the app's ``task_queues``, or its default queue.
    queues: tuple[str, ...] = ()
    #: How long a fixture waits for the worker, and a helper for the counts it asserts.
    timeout: float = 10.0
    #: Where a subprocess worker imports the app from (``proj.celery:app``); empty: found.
    app_path: str = ""

    @property
    def in_process(self) -> bool:
        return self.pool in IN_PROCESS_POOLS

    def with_marker(self, options: Mapping[str, Any]) -> ObserveSettings:
        """These settings with a marker's keyword arguments applied (validated)."""
        fields = {field.name for field in dataclasses.fields(self)} - {"app_path"}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ObserveSettingsError(
                f"@pytest.mark.observe() takes {', '.join(sorted(fields))}; "
                f"not {', '.join(unknown)}")
        merged = {**dataclasses.asdict(self), **options}
        if isinstance(merged["queues"], str):
            merged["queues"] = (merged["queues"],)
        return checked(ObserveSettings(**{**merged, "queues": tuple(merged["queues"])}))


def checked(settings: ObserveSettings) -> ObserveSettings:
    """``settings`` if every value is usable; else an error saying what to give instead."""
    pools = IN_PROCESS_POOLS + SUBPROCESS_POOLS
    if settings.pool not in pools:
        raise ObserveSettingsError(
            f"observe pool {settings.pool!r} is not one of {', '.join(pools)} (solo and "
            "threads run in the test process, prefork as a `celery worker` subprocess)")
    if not isinstance(settings.concurrency, int) or settings.concurrency < 1:
        raise ObserveSettingsError(
            f"observe concurrency must be a whole number of at least 1, "
            f"not {settings.concurrency!r}")
    if not isinstance(settings.timeout, (int, float)) or settings.timeout <= 0:
        raise ObserveSettingsError(
            f"observe timeout must be a positive number of seconds, not {settings.timeout!r}")
    return settings


def from_options(read: Mapping[str, str | None]) -> ObserveSettings:
    """Settings from the plugin's options by name (``pool``, ...), each a string or None."""
    def text(name: str, default: str) -> str:
        value = read.get(name)
        return default if value in (None, "") else str(value)

    try:
        concurrency = int(text("concurrency", "2"))
        timeout = float(text("timeout", "10"))
    except ValueError as exc:
        raise ObserveSettingsError(f"observe concurrency and timeout are numbers: {exc}") \
            from None
    return checked(ObserveSettings(
        pool=text("pool", "solo"), concurrency=concurrency, broker=text("broker", ""),
        backend=text("backend", ""), timeout=timeout, app_path=text("app", "")))
