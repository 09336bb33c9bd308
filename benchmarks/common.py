"""What every benchmark shares: the benchmark app's workers, Flower, HTTP and command timing.

Workers, ports and waits are celery_observe.testing's. Every subprocess started here is
tracked there and ended by ``reap_all``, which ``run.py`` calls in a ``finally`` (also on
Ctrl-C and SIGTERM) and at exit, so an interrupted benchmark leaves no worker, pool child
or Flower behind.
"""

from __future__ import annotations

import contextlib
import http.client
import os
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
from typing import TypeVar

import psutil
from celery import Celery

from benchmarks.appenv import BROKER_ENV, NAMES_ENV, QUEUE_ENV
from celery_observe.testing import (
    ObservedWorker,
    end_process,
    free_port,
    signal_once,
    spawn,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent
APP = "benchmarks.benchapp"
#: What Prometheus sends when it scrapes (OpenMetrics first, gzip allowed).
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
              "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def log(message: str) -> None:
    """Progress on stderr, so a long run shows where it is."""
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- subprocesses -------------------------------------------------------------------------

#: Set by ``run.py --quick``: stop workers without waiting for them (reaped per figure).
DEFER_STOPS = False
#: How long a worker or Flower may take to be ready.
READY_TIMEOUT = 60.0


# --- brokers -------------------------------------------------------------------------------

def redis_url(db: int) -> str:
    return f"redis://127.0.0.1:6379/{db}"


AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


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

class Worker(ObservedWorker):
    """``celery -A benchmarks.benchapp worker`` in a subprocess, plain or observed (with
    ``events``, sending task events; ``options``: more command-line options; ``wrapper``:
    a command the worker runs under, such as valgrind), tracked for :func:`reap_all`."""

    def __init__(self, broker: str, queue: str, pool: str = "prefork", concurrency: int = 2,
                 observe: bool = False, events: bool = False, names: int = 0,
                 hostname: str = "", options: Sequence[str] = (),
                 wrapper: Sequence[str] = ()) -> None:
        super().__init__(APP, broker, queue, pool=pool, concurrency=concurrency,
                         extra_args=(*(("-E",) if events else ()), *options), observe=observe,
                         env=bench_env(broker, queue, names), hostname=hostname or None,
                         broker_env=BROKER_ENV, queue_env=QUEUE_ENV, cwd=REPO,
                         remove_log=True, log_prefix="observe-bench-worker-")
        self.args = [*wrapper, *self.args]


def pool_label(pool: str, concurrency: int) -> str:
    """How figure 1's rows name a pool: ``solo`` (which ignores -c), else ``prefork -c 2``."""
    return "solo" if pool == "solo" else f"{pool} -c {concurrency}"


def cluster_workers(broker: str, queue: str, count: int, pool: str = "prefork",
                    concurrency: int = 1) -> list[Worker]:
    """``count`` observed workers sharing ``queue`` and its control exchange, each named
    ``w<index>.<queue>@localhost``: the cluster that figures 3 and 7 ask."""
    return [Worker(broker, queue, pool, concurrency, observe=True,
                   hostname=f"w{index}.{queue}@localhost") for index in range(count)]


def bench_env(broker: str, queue: str, names: int) -> dict[str, str]:
    return {**os.environ, BROKER_ENV: broker, QUEUE_ENV: queue, NAMES_ENV: str(names),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                        os.environ.get("PYTHONPATH")]))}


class HttpService:
    """A ``celery -A benchmarks.benchapp <command>`` serving HTTP on a free port, tracked for
    :func:`reap_all`; ready once ``ready_path`` answers 200."""

    name = "service"
    ready_path = "/"

    def __init__(self, broker: str, queue: str) -> None:
        self.broker, self.queue = broker, queue
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return bench_env(self.broker, self.queue, 0)

    def launch(self) -> None:
        handle, name = tempfile.mkstemp(prefix=f"observe-bench-{self.name}-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        self.process = spawn(self.command(), self.log_path, self.env(), REPO, remove_log=True)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            return http_get(self.port, self.ready_path)[0] == 200

        wait_until(up, timeout, f"{self.name} to answer {self.ready_path}")

    def log(self) -> str:
        """What the service wrote so far (empty once it stopped: the log is removed)."""
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def rss_mb(self) -> float:
        """The resident memory of the service's process now, in MiB."""
        if self.process is None:
            raise RuntimeError(f"{self.name} was not started: call launch() first")
        return float(psutil.Process(self.process.pid).memory_info().rss) / 2**20


class Flower(HttpService):
    """Flower (from PyPI, a benchmark-only dependency) attached to the run's broker."""

    name = "flower"
    ready_path = "/healthcheck"

    def command(self) -> list[str]:
        return celery_command("flower", "--address=127.0.0.1", f"--port={self.port}")

    def env(self) -> dict[str, str]:
        # Flower 2 answers its /api only with auth set up or this; it listens on loopback.
        return {**super().env(), "FLOWER_UNAUTHENTICATED_API": "true"}


class ApiServer(HttpService):
    """``celery -A benchmarks.benchapp observe serve``: the cluster HTTP API, behind uvicorn."""

    name = "api"
    ready_path = "/docs"
    prefix = "/api/v1/celery"

    def __init__(self, broker: str, queue: str, rate_limit: int = 1_000_000) -> None:
        super().__init__(broker, queue)
        self.rate_limit = rate_limit

    def command(self) -> list[str]:
        return celery_command("observe", "serve", "--address", "127.0.0.1", "--port",
                              str(self.port), "--prefix", self.prefix, "--rate-limit",
                              str(self.rate_limit))


def flower_installed() -> bool:
    try:
        import flower  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def running(*services: Worker | HttpService, timeout: float = READY_TIMEOUT) -> Iterator[None]:
    """Start ``services`` side by side, and stop them all whatever happens meanwhile;
    ``timeout`` bounds the wait for all of them to be ready, not for each."""
    deadline = time.monotonic() + timeout
    try:
        for service in services:
            service.launch()
        for service in services:
            service.wait_ready(max(1.0, deadline - time.monotonic()))
        yield
    finally:
        stop_all(services)


def stop_all(services: Iterable[Worker | HttpService]) -> None:
    """Ask every service to stop at once, then wait for each (a prefork worker takes
    ~2 s); with DEFER_STOPS, only ask: the figure's end reaps them."""
    processes = [service.process for service in services if service.process is not None]
    for process in processes:
        signal_once(process)
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
    rounds: int  # figure 1's alternating rounds
    drain_tasks: int
    tasks_1m: bool
    redis: str
    amqp: str | None
    flower: bool
    notes: list[str] = field(default_factory=list)

    def unique(self, prefix: str) -> str:
        """A queue (and control exchange) name no other run or test uses."""
        return f"observe-bench-{prefix}-{uuid.uuid4().hex[:8]}"
