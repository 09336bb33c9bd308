"""Settings come from the CLI, app.conf, the environment and defaults, in that order."""

from __future__ import annotations

import subprocess
import sys

import pytest

from celery_observe.config import (
    DEFAULT_BUCKETS,
    DEFAULT_PORT,
    FAST_BUCKETS,
    ObserveConfig,
    ObserveConfigError,
    resolve_config,
)

from .workers import REPO


def test_defaults_apply_when_no_source_sets_a_value() -> None:
    """With no CLI, conf or env value every field has its documented default."""
    config = resolve_config({}, {}, {})
    assert config == ObserveConfig(enabled=False, port=DEFAULT_PORT, address="0.0.0.0",
                                   buckets=DEFAULT_BUCKETS, liveness_timeout=60.0)


def test_cli_beats_conf_beats_env() -> None:
    """The command line wins over app.conf, which wins over the environment."""
    env = {"CELERY_OBSERVE_PORT": "7001", "CELERY_OBSERVE_ADDRESS": "10.0.0.1",
           "CELERY_OBSERVE_LIVENESS_TIMEOUT": "5"}
    conf = {"observe_port": 7002, "observe_address": "127.0.0.1"}
    cli = {"observe_port": 7003, "observe_address": None}
    config = resolve_config(cli, conf, env)
    assert (config.port, config.address, config.liveness_timeout) == (7003, "127.0.0.1", 5.0)


def test_bucket_presets_and_lists_are_parsed() -> None:
    """Buckets accept a preset name or increasing comma-separated seconds."""
    assert resolve_config({}, {"observe_buckets": "fast"}, {}).buckets == FAST_BUCKETS
    assert resolve_config({}, {}, {"CELERY_OBSERVE_BUCKETS": "0.5, 1,2"}).buckets == (0.5, 1, 2)
    assert resolve_config({}, {"observe_buckets": [1, 10]}, {}).buckets == (1.0, 10.0)


@pytest.mark.parametrize(("source", "value", "names"), [
    ("cli", "abc", ["--observe-port", "'abc'", "0 to 65535"]),
    ("conf", 70000, ["app.conf.observe_port", "70000", "0 to 65535"]),
    ("env", "-1", ["CELERY_OBSERVE_PORT", "'-1'", "0 to 65535"]),
])
def test_bad_port_message_names_source_value_and_fix(source: str, value: object,
                                                     names: list[str]) -> None:
    """A bad port raises an error naming where it came from, the value and what is allowed."""
    sources = {"cli": ({"observe_port": value}, {}, {}), "conf": ({}, {"observe_port": value}, {}),
               "env": ({}, {}, {"CELERY_OBSERVE_PORT": value})}[source]
    with pytest.raises(ObserveConfigError) as raised:
        resolve_config(*sources)  # type: ignore[arg-type]
    for name in names:
        assert name in str(raised.value)


@pytest.mark.parametrize(("key", "value"), [
    ("observe_buckets", "5,1"), ("observe_buckets", "0,1"), ("observe_buckets", "fastest"),
    ("observe_liveness_timeout", "0"), ("observe_liveness_timeout", "nan"),
    ("observe_enabled", "maybe"), ("observe_address", "  "),
])
def test_invalid_values_are_refused(key: str, value: str) -> None:
    """Decreasing or non-positive buckets, bad timeouts, flags and addresses are refused."""
    with pytest.raises(ObserveConfigError, match=key):
        resolve_config({}, {key: value}, {})


@pytest.mark.parametrize(("source", "expected"), [
    (({"observe_advertise_address": "10.1.2.3"}, {}, {}), "10.1.2.3"),
    (({}, {"observe_advertise_address": " worker1.example.com "}, {}), "worker1.example.com"),
    (({}, {}, {"CELERY_OBSERVE_ADVERTISE_ADDRESS": "fd00::5"}), "fd00::5"),
    (({}, {}, {}), None),
])
def test_advertise_address_is_read_from_every_source(
        source: tuple[dict[str, str], dict[str, str], dict[str, str]],
        expected: str | None) -> None:
    """An IPv4, IPv6 address or host name from the CLI, app.conf or env; unset by default."""
    assert resolve_config(*source).advertise_address == expected


@pytest.mark.parametrize("value", ["0.0.0.0", "::", "0:0::0", "worker1:9540",
                                   "10.0.0.5:9540", "[fd00::5]", "two words", " "])
def test_advertise_address_refuses_wildcards_ports_and_blanks(value: str) -> None:
    """Every interface, a port, brackets or spaces: refused, naming the variable and the fix."""
    with pytest.raises(ObserveConfigError) as raised:
        resolve_config({}, {}, {"CELERY_OBSERVE_ADVERTISE_ADDRESS": value})
    assert str(raised.value) == (
        f"celery-observe: environment variable CELERY_OBSERVE_ADVERTISE_ADDRESS has the value "
        f"{value!r}, which is not valid: expected the address or host name others reach this "
        "worker at, such as 10.0.0.5, worker1.example.com or fd00::5 (no port; not 0.0.0.0 or "
        "::).")


def test_enabled_accepts_the_usual_spellings() -> None:
    """Environment flags accept true/false, yes/no, on/off and 1/0."""
    for text, expected in (("yes", True), ("ON", True), ("1", True), ("off", False), ("0", False)):
        assert resolve_config({}, {}, {"CELERY_OBSERVE_ENABLED": text}).enabled is expected


def run_celery(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celery", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=env)


def test_worker_help_lists_the_observe_options() -> None:
    """The entry point adds every --observe option to `celery worker` with no app code."""
    result = run_celery("worker", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--observe", "--observe-port", "--observe-address", "--observe-buckets",
                 "--observe-liveness-timeout"):
        assert flag in result.stdout


def test_bad_cli_value_stops_the_worker_before_it_starts() -> None:
    """A bad --observe-port is a usage error (exit 2) that names the option and the fix."""
    result = run_celery("-A", "tests.workerapp", "worker", "--observe", "--observe-port", "http")
    assert result.returncode == 2
    assert "--observe-port" in result.stderr and "0 to 65535" in result.stderr


def test_bad_env_value_stops_the_worker_with_the_message() -> None:
    """A bad CELERY_OBSERVE_* value makes the worker exit non-zero naming the variable."""
    import os
    env = {**os.environ, "CELERY_OBSERVE_BUCKETS": "10,1"}
    result = run_celery("-A", "tests.workerapp", "worker", "--observe", "-P", "solo", env=env)
    assert result.returncode != 0
    assert "environment variable CELERY_OBSERVE_BUCKETS has the value '10,1'" in result.stderr


def test_public_api_loads_lazily_and_completely() -> None:
    """Every name in __all__ resolves, and importing the package loads no heavy module."""
    code = ("import sys, celery_observe as c; "
            "heavy = [m for m in ('prometheus_client', 'psutil', 'celery_observe.worker.observer') "
            "if m in sys.modules]; "
            "missing = [n for n in c.__all__ if getattr(c, n, None) is None]; "
            "print(heavy, missing)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.stdout.strip() == "[] []", result.stderr
