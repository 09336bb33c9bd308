"""What every benchmark shares: workers and Flower in subprocesses, HTTP and command timing.

Every subprocess started here is tracked in one registry and ended by :func:`reap_all`,
which ``run.py`` calls in a ``finally`` (also on Ctrl-C and SIGTERM) and at exit, so an
interrupted benchmark leaves no worker, pool child or Flower behind.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psutil
from celery import Celery

from benchmarks.appenv import BROKER_ENV, NAMES_ENV, QUEUE_ENV

REPO = Path(__file__).resolve().parent.parent
APP = "benchmarks.benchapp"
SERVING = re.compile(r"celery-observe: serving .* on (?P<address>\S+):(?P<port>\d+)")
READY = re.compile(r"@localhost ready\.")
#: What Prometheus sends when it scrapes (OpenMetrics first, gzip allowed).
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
              "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def log(message: str) -> None:
    """Progress on stderr, so a long run shows where it is."""
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- subprocess registry ---------------------------------------------------------------

#: Set by ``run.py --quick``: stop workers without waiting for them (reaped per figure).
DEFER_STOPS = False


@dataclass
class _Tracked:
    log_path: Path
    signalled: bool = False


_LIVE: dict[subprocess.Popen[bytes], _Tracked] = {}
_LIVE_LOCK = threading.Lock()


def spawn(args: Sequence[str], env: dict[str, str], prefix: str) -> tuple[
        subprocess.Popen[bytes], Path]:
    """Start ``args`` in its own process group (so its children go with it) and track it;
    returns the process and the file its output goes to."""
    handle, name = tempfile.mkstemp(prefix=f"observe-bench-{prefix}-", suffix=".log")
    with os.fdopen(handle, "wb") as out:
        process = subprocess.Popen(list(args), cwd=REPO, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    with _LIVE_LOCK:
        _LIVE[process] = _Tracked(Path(name))
    return process, Path(name)


def signal_process(process: subprocess.Popen[bytes]) -> None:
    """Ask ``process`` to stop (SIGTERM: a worker's warm shutdown), once."""
    with _LIVE_LOCK:
        tracked = _LIVE.get(process)
        if tracked is None or tracked.signalled:
            return
        tracked.signalled = True
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)


def end_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Ask ``process`` to stop, wait, then kill its process group if anything lingers."""
    try:
        signal_process(process)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        # Pool children that outlived their parent are still in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    finally:
        with _LIVE_LOCK:
            tracked = _LIVE.pop(process, None)
        if tracked is not None:
            with contextlib.suppress(OSError):
                tracked.log_path.unlink()


def reap_all(timeout: float = 15.0) -> None:
    """End every tracked subprocess: ask all at once, then kill what is left."""
    with _LIVE_LOCK:
        processes = list(_LIVE)
    for process in processes:
        signal_process(process)
    deadline = time.monotonic() + timeout
    for process in processes:
        end_process(process, timeout=max(0.1, deadline - time.monotonic()))


# --- brokers -------------------------------------------------------------------------------

def redis_url(db: int) -> str:
    return f"redis://127.0.0.1:6379/{db}"


AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def client_app(broker: str, queue: str) -> Celery:
    """A producer/client app configured like the benchmark app's workers for ``queue``."""
    app = Celery("benchapp-client", broker=broker, set_as_current=False)
    app.conf.update(broker_connection_retry_on_startup=True, task_default_queue=queue,
                    control_exchange=queue, task_ignore_result=True)
    return app


def cleanup_amqp(queue: str) -> None:
    """Delete the queue and remote-control exchanges a RabbitMQ run created."""
    app = client_app(AMQP_URL, queue)
    try:
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            for name in (queue, f"{queue}.pidbox", f"reply.{queue}.pidbox"):
                with contextlib.suppress(Exception):
                    channel.exchange_delete(name)
            with contextlib.suppress(Exception):
                channel.queue_delete(queue)
    finally:
        app.close()


# --- workers -------------------------------------------------------------------------------

@dataclass
class Worker:
    """``celery -A benchmarks.benchapp worker`` in a subprocess, plain or observed."""

    broker: str
    queue: str
    pool: str = "prefork"
    concurrency: int = 2
    observe: bool = False
    events: bool = False
    names: int = 0  # generated task names the app registers
    hostname: str = ""
    process: subprocess.Popen[bytes] | None = None
    port: int | None = None
    log_path: Path | None = None

    def args(self) -> list[str]:
        args = [sys.executable, "-m", "celery", "-A", APP, "worker", "-P", self.pool,
                "-c", str(self.concurrency), "-Q", self.queue,
                "-n", self.hostname or f"{self.queue}@localhost",
                "--without-mingle", "--without-gossip", "-l", "info"]
        if self.observe:
            args += ["--observe", "--observe-port", "0", "--observe-address", "127.0.0.1"]
        if self.events:
            args.append("-E")
        return args

    def launch(self) -> None:
        self.process, self.log_path = spawn(
            self.args(), bench_env(self.broker, self.queue, self.names), "worker")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for "ready." (and, observed, for the port and ``/readyz``)."""
        wait_until(lambda: self._search(READY), timeout, f"worker {self.queue} to be ready")
        if self.observe:
            match = wait_until(lambda: self._search(SERVING), timeout, "the observe port")
            self.port = int(match.group("port"))
            wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, timeout, "/readyz")

    def _search(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited with {self.process.returncode}:\n"
                               + self.log()[-3000:])
        return pattern.search(self.log())

    def log(self) -> str:
        if self.log_path is None:
            return ""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def main_process(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def stop(self) -> None:
        stop_all([self])


def bench_env(broker: str, queue: str, names: int) -> dict[str, str]:
    return {**os.environ, BROKER_ENV: broker, QUEUE_ENV: queue, NAMES_ENV: str(names),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                        os.environ.get("PYTHONPATH")]))}


class Flower:
    """Flower (from PyPI, a benchmark-only dependency) attached to the run's broker."""

    def __init__(self, broker: str, queue: str) -> None:
        self.broker, self.queue = broker, queue
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    def launch(self) -> None:
        args = [sys.executable, "-m", "celery", "-A", APP, "flower", "--address=127.0.0.1",
                f"--port={self.port}"]
        self.process, self.log_path = spawn(args, bench_env(self.broker, self.queue, 0),
                                            "flower")

    def wait_ready(self, timeout: float = 60.0) -> None:
        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"flower exited with {self.process.returncode}")
            return http_get(self.port, "/healthcheck")[0] == 200

        wait_until(up, timeout, "flower to answer /healthcheck")

    def stop(self) -> None:
        stop_all([self])


def flower_installed() -> bool:
    try:
        import flower  # noqa: F401
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def running(*services: Worker | Flower) -> Iterator[None]:
    """Start ``services`` side by side, and stop them all whatever happens meanwhile."""
    try:
        for service in services:
            service.launch()
        for service in services:
            service.wait_ready()
        yield
    finally:
        stop_all(services)


def stop_all(services: Iterable[Worker | Flower]) -> None:
    """Ask every service to stop at once, then wait for each (a prefork worker takes
    ~2 s); with DEFER_STOPS, only ask: the figure's end reaps them."""
    processes = [service.process for service in services if service.process is not None]
    for process in processes:
        signal_process(process)
    if not DEFER_STOPS:
        for process in processes:
            end_process(process)


# --- HTTP and commands ---------------------------------------------------------------------

def http_get(port: int | None, path: str, headers: dict[str, str] | None = None,
             timeout: float = 5.0) -> tuple[int | None, bytes, float, dict[str, str]]:
    """One GET on a new connection (as a kubelet or Prometheus makes it); never raises."""
    if port is None:
        return None, b"", 0.0, {}
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return (response.status, body, time.perf_counter() - started,
                {k.lower(): v for k, v in response.getheaders()})
    except OSError:
        return None, b"", time.perf_counter() - started, {}
    finally:
        connection.close()


T = TypeVar("T")


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """``call()`` and the seconds it took."""
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


def time_command(args: Sequence[str], env: dict[str, str],
                 timeout: float = 60.0) -> tuple[float, int, str]:
    """Run a command to its end; (seconds, exit code, output). Killed on any exception."""
    started = time.perf_counter()
    done = subprocess.run(list(args), cwd=REPO, env=env, capture_output=True, timeout=timeout,
                          check=False)
    return (time.perf_counter() - started, done.returncode,
            (done.stdout + done.stderr).decode(errors="replace"))


def celery_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", APP, *args]


class Scraper:
    """Scrapes ``/metrics`` every ``interval`` seconds on a thread, as Prometheus would."""

    def __init__(self, port: int | None, interval: float) -> None:
        self.port, self.interval = port, interval
        self.scrapes = self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-scraper", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            status = http_get(self.port, "/metrics", PROMETHEUS_HEADERS)[0]
            self.scrapes += 1
            self.failures += status != 200

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


# --- what every figure gets ----------------------------------------------------------------

@dataclass
class Context:
    """The run's settings and brokers, handed to every figure's ``run``."""

    quick: bool
    runs: int
    drain_tasks: int
    tasks_1m: bool
    redis: str
    amqp: str | None
    flower: bool
    notes: list[str] = field(default_factory=list)

    def unique(self, prefix: str) -> str:
        """A queue (and control exchange) name no other run or test uses."""
        return f"observe-bench-{prefix}-{uuid.uuid4().hex[:8]}"
