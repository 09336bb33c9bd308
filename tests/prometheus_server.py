"""A real Prometheus for tests (Debian's package), and the cluster API served for it to scrape.

Prometheus runs on a free port with a temporary data directory and a 1 s scrape interval,
is asked through its HTTP API, and is stopped with its files removed (its log is kept in
the failure message). Without the binary a test skips, unless
CELERY_OBSERVE_REQUIRE_BROKERS=1 (as on CI), where it fails (the rule of tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from celery_observe.testing import end_process, free_port, spawn, wait_until


def debian_binary(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``, or skip (fail on CI) without it."""
    binary = shutil.which(name)
    if binary is None:
        reason = f"{name} is not installed (Debian's prometheus package; .ci/run installs it)"
        if os.environ.get("CELERY_OBSERVE_REQUIRE_BROKERS") == "1":
            pytest.fail(f"{reason}, and CELERY_OBSERVE_REQUIRE_BROKERS=1 forbids skipping")
        pytest.skip(reason)
    return binary


class PrometheusError(AssertionError):
    """Prometheus refused a query or exited."""


class Prometheus:
    """One Prometheus process with ``config`` (YAML) and ``files`` written beside it."""

    def __init__(self, config: str, files: Mapping[str, str] | None = None) -> None:
        binary = debian_binary("prometheus")
        self.directory = Path(tempfile.mkdtemp(prefix="observe-prometheus-"))
        (self.directory / "prometheus.yml").write_text(config)
        for name, text in (files or {}).items():
            (self.directory / name).write_text(text)
        self.port = free_port()
        self._process = spawn(
            [binary, f"--config.file={self.directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            self.directory / "prometheus.log")

    def __enter__(self) -> Prometheus:
        wait_until(self._ready, 30, f"Prometheus to get ready\n{self.log()}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        end_process(self._process)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _ready(self) -> bool:
        if self._process.poll() is not None:
            raise PrometheusError(f"Prometheus exited\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "prometheus.log").read_text(errors="replace")[-4000:]
        return ""

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of an answer of the HTTP API; a refused query raises with its error."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The series an instant query returns now ([] for a scalar)."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] in ("vector", "matrix") else []

    def targets_up(self) -> dict[str, set[str]]:
        """Instances scraped successfully, by job (an unreachable Prometheus: none)."""
        try:
            active = self.api("targets")["activeTargets"]
        except OSError:
            return {}
        up: dict[str, set[str]] = {}
        for target in active:
            if target["health"] == "up":
                up.setdefault(target["labels"]["job"], set()).add(target["labels"]["instance"])
        return up


@contextlib.contextmanager
def serving(web: Any) -> Iterator[int]:
    """An ASGI app (the cluster API) in a real uvicorn server on a free port, as
    ``celery observe serve`` runs it; yields the port."""
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(web, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 20, "uvicorn to start")
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
