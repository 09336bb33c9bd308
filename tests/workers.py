"""Real worker processes for tests: start, wait for, scrape and stop them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
SERVING = re.compile(r"celery-observe: serving .* on (?P<address>\S+):(?P<port>\d+)")
READY = re.compile(r"@localhost ready\.")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of a Prometheus text page keyed by (name, labels)."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


class WorkerProcess:
    """``celery -A tests.workerapp worker --observe`` in a subprocess."""

    def __init__(self, broker: str, queue: str, pool: str = "prefork", concurrency: int = 2,
                 extra_args: tuple[str, ...] = (), port: int = 0,
                 env: dict[str, str] | None = None, name: str | None = None,
                 app: str = "tests.workerapp") -> None:
        self.broker = broker
        self.queue = queue
        self.hostname = f"{name or queue}@localhost"
        self.log_path = Path(tempfile.mkstemp(prefix="observe-worker-", suffix=".log")[1])
        self.args = [
            sys.executable, "-m", "celery", "-A", app, "worker",
            "--observe", "--observe-port", str(port), "--observe-address", "127.0.0.1",
            "-P", pool, "-c", str(concurrency), "-Q", queue, "-n", self.hostname,
            "--without-mingle", "--without-gossip", "-l", "info", *extra_args,
        ]
        self.env = {**os.environ, "CELERY_OBSERVE_TEST_BROKER": broker,
                    "CELERY_OBSERVE_TEST_QUEUE": queue, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def __enter__(self) -> WorkerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, serving: bool = True, probe_ready: bool = True) -> None:
        """Start and wait until ready; with ``serving`` False, expect no HTTP server.

        Ready means ``/readyz`` answers 200, or with ``probe_ready`` False (for a worker
        whose probes are meant to fail) Celery's "ready." line.
        """
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if not serving:
            wait_until(lambda: self._poll_log(READY), 30, "worker to be ready")
            return
        match = wait_until(lambda: self._poll_log(SERVING), 30, "worker to serve")
        self.port = int(match.group("port"))
        if probe_ready:
            wait_until(lambda: self.status_code("/readyz") == 200, 30, "worker to be ready")
        else:
            wait_until(lambda: self._poll_log(READY), 30, "worker to be ready")

    def count_in_log(self, text: str) -> int:
        """How many times ``text`` occurs in the worker's log so far."""
        return self.log().count(text)

    def _poll_log(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()}")
        return pattern.search(self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url(path), headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def status_code(self, path: str) -> int | None:
        try:
            return self.get(path)[0]
        except OSError:
            return None

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse_metrics(self.get("/metrics")[2].decode())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the worker to exit; returns its exit code."""
        process = self.process
        if process is None or process.poll() is not None:
            return process.returncode if process is not None else 0
        process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            raise AssertionError(f"worker ignored {sig} for {timeout} s:\n{self.log()}") from None
