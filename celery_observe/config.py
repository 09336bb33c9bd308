"""The one place where celery-observe's settings are read, parsed and validated.

Every setting can come from four places; the first that gives a value wins:

1. the worker command line (``--observe-port 9540``),
2. the app's configuration (``app.conf.observe_port = 9540``; with Django's
   ``namespace="CELERY"`` that is ``CELERY_OBSERVE_PORT`` in settings.py),
3. the environment (``CELERY_OBSERVE_PORT=9540``),
4. the default below.

A bad value raises :class:`ObserveConfigError` naming the setting, where it came
from, the value and what would be accepted, so the worker refuses to start
instead of running half-observed.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from celery.exceptions import ImproperlyConfigured

#: Buckets of the metrics guide: tasks that take seconds to hours. Alone they put every
#: sub-second task in the first bucket (a P95 of 0.95 s for a 1 ms task and a 0.2 s one).
GUIDE_BUCKETS: tuple[float, ...] = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
#: From 5 ms to 2 h: sub-second resolution, and every bound of the guide's, so its queries
#: and dashboards (``le="60.0"``, ``le="300.0"``, ...) keep finding their series.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800,
    3600, 7200,
)
#: For workloads of short tasks only: fewer series than the default, nothing past 60 s.
FAST_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)
BUCKET_PRESETS: dict[str, tuple[float, ...]] = {
    "default": DEFAULT_BUCKETS, "guide": GUIDE_BUCKETS, "fast": FAST_BUCKETS}

DEFAULT_PORT = 9540


class ObserveConfigError(ImproperlyConfigured):  # type: ignore[misc]
    """A celery-observe setting has a value that cannot be used."""


@dataclass(frozen=True)
class ObserveConfig:
    """Resolved settings of one observed worker."""

    enabled: bool = False
    port: int = DEFAULT_PORT
    address: str = "0.0.0.0"
    advertise_address: str | None = None
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    liveness_timeout: float = 60.0
    history_size: int = 1000
    resource_interval: float = 30.0
    max_task_names: int = 1000
    task_names_allow: tuple[str, ...] = ()
    task_names_deny: tuple[str, ...] = ()
    show_task_args: bool = False


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected one of true/false, yes/no, on/off, 1/0")


def whole_number(low: int, high: int, hint: str) -> Callable[[Any], int]:
    """A parser of whole numbers from ``low`` to ``high``; ``hint`` says what is expected."""

    def parse(value: Any) -> int:
        if isinstance(value, bool):  # True is an int to Python, not a number to a user
            raise ValueError(hint)
        if isinstance(value, float) and not value.is_integer():  # int() would truncate it
            raise ValueError(hint)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(hint) from None
        if not low <= number <= high:
            raise ValueError(hint)
        return number

    return parse


_parse_port = whole_number(0, 65535, "expected a whole number from 0 to 65535 "
                                      "(0 picks a free port)")
_parse_count = whole_number(1, 1_000_000, "expected a whole number from 1 to 1000000")


def _word(value: Any, hint: str) -> str:
    text = str(value).strip()
    if not text or any(ch.isspace() for ch in text):
        raise ValueError(hint)
    return text


def _parse_address(value: Any) -> str:
    return _word(value, "expected an interface address such as 0.0.0.0, 127.0.0.1 or ::")


def _parse_advertise_address(value: Any) -> str:
    """A host others can reach: not a wildcard, and no port (Prometheus adds the port)."""
    hint = ("expected the address or host name others reach this worker at, such as "
            "10.0.0.5, worker1.example.com or fd00::5 (no port; not 0.0.0.0 or ::)")
    text = _word(value, hint)
    try:
        refused = ipaddress.ip_address(text).is_unspecified  # 0.0.0.0 or ::, however spelled
    except ValueError:  # a host name, where a colon means a port ("host:9540")
        refused = ":" in text
    if refused:
        raise ValueError(hint)
    return text


def _parse_buckets(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        name = value.strip().lower()
        if name in BUCKET_PRESETS:
            return BUCKET_PRESETS[name]
        parts: list[Any] = [part for part in value.split(",") if part.strip()]
    else:
        parts = list(value)
    hint = (
        "expected a preset name (" + ", ".join(sorted(BUCKET_PRESETS)) + ") or "
        "comma-separated upper bounds in seconds, increasing, e.g. 0.1,0.5,1,5"
    )
    try:
        bounds = tuple(float(part) for part in parts)
    except (TypeError, ValueError):
        raise ValueError(hint) from None
    if not bounds or any(not math.isfinite(b) or b <= 0 for b in bounds):
        raise ValueError(hint)
    if any(later <= earlier for earlier, later in itertools.pairwise(bounds)):
        raise ValueError(hint)
    return bounds


def _parse_patterns(value: Any) -> tuple[str, ...]:
    parts = value.split(",") if isinstance(value, str) else list(value)
    patterns = tuple(str(part).strip() for part in parts if str(part).strip())
    if any(any(ch.isspace() for ch in pattern) for pattern in patterns):
        raise ValueError("expected comma-separated task name patterns such as "
                         "'proj.reports.*,proj.billing.charge' (no spaces inside a pattern)")
    return patterns


_SECONDS = "a number of seconds greater than 0"


def _is_positive_seconds(number: float) -> bool:
    return math.isfinite(number) and number > 0


def _parse_seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected {_SECONDS}") from None
    if not _is_positive_seconds(seconds):
        raise ValueError(f"expected {_SECONDS}")
    return seconds


# --- arguments of celery-observe's own classes ------------------------------------------
# Settings above are text from a command line or the environment, parsed; arguments below
# come from code, so they are taken only as the type they must be ("5" is refused, not
# parsed), and the message names the argument: "ttl must be ..., got 0".


def positive_seconds(name: str, value: Any) -> float:
    """``value`` as seconds, for the argument ``name``: an int or float, finite, above 0.

    Refuses booleans (``True`` is an int to Python, not a duration), text, ``nan`` and
    ``inf`` with ``ValueError("<name> must be a number of seconds greater than 0, got
    <value>")``.
    """
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not _is_positive_seconds(value)):
        raise ValueError(f"{name} must be {_SECONDS}, got {value!r}")
    return float(value)


def at_least(name: str, minimum: int, value: Any) -> int:
    """``value`` as a count, for the argument ``name``: an int (not a bool) >= ``minimum``.

    Refuses floats, even whole ones, booleans and text with ``ValueError("<name> must be
    an integer of at least <minimum>, got <value>")``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class Setting:
    """How one field of :class:`ObserveConfig` is spelled in each source."""

    field: str
    flag: str
    parse: Callable[[Any], Any]
    help: str
    is_flag: bool = False

    @property
    def cli_name(self) -> str:
        """The keyword click passes the flag's value under."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def conf_key(self) -> str:
        return "observe_" + self.field

    @property
    def env_var(self) -> str:
        return "CELERY_OBSERVE_" + self.field.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("enabled", "--observe", parse_bool,
            "Serve /metrics and probes from this worker and record every task outcome.",
            is_flag=True),
    Setting("port", "--observe-port", _parse_port,
            f"Port of the worker's HTTP server (default {DEFAULT_PORT}; 0 picks a free port)."),
    Setting("address", "--observe-address", _parse_address,
            "Interface the HTTP server listens on (default 0.0.0.0)."),
    Setting("advertise_address", "--observe-advertise-address", _parse_advertise_address,
            "Address or host name others (Prometheus) reach the HTTP server at (default: "
            "the listening address, or this host's primary IP when that is 0.0.0.0 or ::)."),
    Setting("buckets", "--observe-buckets", _parse_buckets,
            "Task duration buckets: 'default' (5 ms to 2 h), 'guide' (the metrics "
            "guide's 1 s to 2 h), 'fast' (5 ms to 60 s) or comma-separated seconds."),
    Setting("liveness_timeout", "--observe-liveness-timeout", _parse_seconds,
            "Seconds without a tick of the worker's event loop before /healthz "
            "answers 503 (default 60)."),
    Setting("history_size", "--observe-history-size", _parse_count,
            "How many finished tasks the worker remembers for `celery observe history` "
            "and the duration percentiles (default 1000)."),
    Setting("resource_interval", "--observe-resource-interval", _parse_seconds,
            "Seconds between samples of memory, CPU, files and threads of the main process "
            "and each pool child (default 30)."),
    Setting("max_task_names", "--observe-max-task-names", _parse_count,
            "Distinct task names with series of their own; later ones are counted as "
            "task_name='other' (default 1000)."),
    Setting("task_names_allow", "--observe-task-names-allow", _parse_patterns,
            "Only these task names (comma-separated glob patterns) get series of their own."),
    Setting("task_names_deny", "--observe-task-names-deny", _parse_patterns,
            "These task names (comma-separated glob patterns) are counted as 'other'."),
    Setting("show_task_args", "--observe-show-task-args", parse_bool,
            "Show task arguments in task listings (default: redacted, they may hold "
            "personal data or secrets).", is_flag=True),
)


def resolve_config(
    cli: Mapping[str, Any] | None = None,
    conf: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> ObserveConfig:
    """Build the config from CLI options, app.conf and environment (default: os.environ)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        for source, key, mapping in (
            ("command line option " + setting.flag, setting.cli_name, cli),
            ("app.conf." + setting.conf_key, setting.conf_key, conf),
            ("environment variable " + setting.env_var, setting.env_var, env),
        ):
            raw = mapping.get(key) if mapping is not None else None
            if raw is None:
                continue
            try:
                values[setting.field] = setting.parse(raw)
            except ValueError as exc:
                message = f"celery-observe: {source} has the value {raw!r}, which is not valid"
                raise ObserveConfigError(f"{message}: {exc}.") from None
            break
    return ObserveConfig(**values)
