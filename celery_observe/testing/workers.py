"""An observed Celery worker in a subprocess: start it, wait till it serves, ask it, stop it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from .http import ServedOverHttp
from .ports import listening_ports
from .processes import kill_group, release, signal_once, spawn
from .waits import WaitTimeoutError, wait_until

#: Celery's own line once the consumer runs (``<hostname> ready.``).
READY = re.compile(r"\S+@\S+ ready\.")


class WorkerError(AssertionError):
    """The worker exited while it was waited for, or ignored the signal to stop."""


class ObservedWorker(ServedOverHttp):
    """``celery -A <app> worker --observe`` in a subprocess of its own session.

    The broker reaches the app through the environment variable ``broker_env`` (Celery's
    own ``CELERY_BROKER_URL`` unless the app reads another; kept off the command line,
    where ``ps`` would show a password), the queue through ``-Q`` and, for apps that also
    name their remote-control exchange after it, ``queue_env``. The worker runs without
    mingle and gossip, so its main process listens on one TCP port only: its HTTP server.
    That port is read from the OS once the worker starts (see :meth:`wait_ready`). With
    ``observe`` False the worker is a plain one (no ``--observe``), for comparisons.
    Its output goes to :attr:`log_path`, kept after it stops unless ``remove_log``.
    """

    def __init__(self, app: str, broker: str, queue: str, *, pool: str = "prefork",
                 concurrency: int = 2, extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, hostname: str | None = None,
                 port: int = 0, address: str = "127.0.0.1", observe: bool = True,
                 broker_env: str = "CELERY_BROKER_URL", queue_env: str | None = None,
                 cwd: Path | None = None, remove_log: bool = False,
                 log_prefix: str = "observe-worker-") -> None:
        self.app, self.broker, self.queue, self.observe = app, broker, queue, observe
        self.hostname = hostname or f"{queue}@localhost"
        self.address = address
        handle, name = tempfile.mkstemp(prefix=log_prefix, suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        self.remove_log = remove_log
        observing = (["--observe", "--observe-port", str(port), "--observe-address", address]
                     if observe else [])
        self.args = [
            sys.executable, "-m", "celery", "-A", app, "worker", *observing,
            "-P", pool, "-c", str(concurrency), "-Q", queue, "-n", self.hostname,
            "--without-mingle", "--without-gossip", "-l", "info", *extra_args,
        ]
        self.env = {**os.environ, broker_env: broker,
                    **({queue_env: queue} if queue_env else {}), **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._ports_seen: set[int] = set()

    def __enter__(self) -> ObservedWorker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- starting ----------------------------------------------------------------------

    def start(self, serving: bool = True, probe_ready: bool = True,
              timeout: float = 30.0) -> None:
        """:meth:`launch`, then :meth:`wait_ready`."""
        self.launch()
        self.wait_ready(timeout, serving=serving, probe_ready=probe_ready)

    def launch(self) -> None:
        """Start the process and return at once (start several, then wait for each)."""
        self.process = spawn(self.args, self.log_path, self.env, self.cwd, self.remove_log)

    def wait_ready(self, timeout: float = 30.0, *, serving: bool = True,
                   probe_ready: bool = True) -> None:
        """Wait until the worker serves and is ready; fail if it exits meanwhile.

        Serving: its main process listens on exactly one TCP port, which becomes
        :attr:`port`. Ready: ``/readyz`` answers 200, or with ``probe_ready`` False (for a
        worker whose probes are meant to fail) Celery's "ready." line. A plain worker, or
        one with ``serving`` False (meant to serve nothing), only waits for that line.
        """
        if not (self.observe and serving):
            wait_until(self._logged_ready, timeout, "the worker to be ready")
            return
        self.wait_serving(timeout)
        if probe_ready:
            wait_until(lambda: self._running() and self.status_code("/readyz") == 200,
                       timeout, "the worker to be ready")
        else:
            wait_until(self._logged_ready, timeout, "the worker to be ready")

    def wait_serving(self, timeout: float = 30.0) -> int:
        """Wait until the worker's HTTP server listens, ready or not; its port (also
        :attr:`port`). For a test of a worker that is not, or not yet, ready."""
        try:
            port = wait_until(self._listening_port, timeout, "the worker to serve")
        except WaitTimeoutError as error:
            seen = sorted(self._ports_seen) or "no port"
            raise WaitTimeoutError(f"{error}: its main process listens on {seen}\n{self.log()}",
                                   ) from None
        self.port = port
        return port

    def _running(self) -> subprocess.Popen[bytes]:
        process = self._started()
        if process.poll() is not None:
            raise WorkerError(f"worker exited with {process.returncode}:\n{self.log()}")
        return process

    def _logged_ready(self) -> bool:
        self._running()
        return READY.search(self.log()) is not None

    def _listening_port(self) -> int | None:
        process = self._running()
        try:
            self._ports_seen = listening_ports(process.pid)
        except psutil.NoSuchProcess:  # exited (or a zombie) since: the next poll says so
            self._ports_seen = set()
        return next(iter(self._ports_seen)) if len(self._ports_seen) == 1 else None

    # --- asking ------------------------------------------------------------------------

    def log(self) -> str:
        """What the worker wrote so far (empty once a removed log is gone)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def count_in_log(self, text: str) -> int:
        """How many times ``text`` occurs in the worker's log so far."""
        return self.log().count(text)

    @property
    def pid(self) -> int:
        """The main process's id."""
        return self._started().pid

    def main_process(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def _started(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise WorkerError("the worker was not started: call start() or launch() first")
        return self.process

    # --- stopping ----------------------------------------------------------------------

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the worker to exit; returns its exit code.

        A worker that ignores ``sig`` for ``timeout`` s is asked for its threads' stacks
        (Celery's own SIGUSR1 handler writes them to the log, so the failure shows where
        it hangs), then killed (its whole process group), and the call fails. Pool
        children are not killed otherwise: a test may want to see them exit by themselves.
        """
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            signal_once(process, sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._dump_stacks(process)
                kill_group(process)
                process.wait(10)
                message = f"worker ignored {sig} for {timeout} s:\n{self.log()}"
                release(process)
                raise WorkerError(message) from None
        release(process)
        return process.returncode

    def _dump_stacks(self, process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        """Have a hung worker log every thread's stack (Celery's SIGUSR1 handler) and wait
        until its log stops growing, up to ``timeout`` s."""
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGUSR1)
        sizes: list[int] = []

        def log_settled() -> bool:
            sizes.append(len(self.log()))
            return len(sizes) > 4 and sizes[-1] == sizes[-5] > sizes[0]

        with contextlib.suppress(WaitTimeoutError):
            wait_until(log_settled, timeout, "the worker to log its stacks", interval=0.1)
