"""`celery -A proj observe serve` as an operator runs it: a real uvicorn process, real workers.

The server is a subprocess started the way a user starts it, so what is tested is what
ships: the command's options, its port read from the OS (as the harness does for workers),
its log lines, its exit on SIGTERM, and a worker-only install where FastAPI is missing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from celery_observe.testing import end_process, listening, listening_ports, spawn, wait_until

from .conftest import answering_workers
from .workers import REPO, WorkerProcess

PREFIX = "/api/v1/celery"
TOKEN = "serve-test-token-" + "x" * 24
#: How the server logs one request: method, path, status, milliseconds, client.
REQUEST_LINE = r"{method} {path} {status} \d+\.\d ms 127\.0\.0\.1$"


class ServeProcess:
    """``python -m celery -A tests.workerapp observe serve --port 0 ...`` in a subprocess."""

    def __init__(self, broker: str, queue: str, log_path: Path, *args: str) -> None:
        self.args = [sys.executable, "-m", "celery", "-A", "tests.workerapp", "observe",
                     "serve", "--port", "0", "--timeout", "5", "--discovery-timeout", "1",
                     *args]
        self.env = {**os.environ, "CELERY_OBSERVE_TEST_BROKER": broker,
                    "CELERY_OBSERVE_TEST_QUEUE": queue}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> ServeProcess:
        self.process = spawn(self.args, self.log_path, self.env, REPO)
        self.port = wait_until(self._one_listening_port, 30, "the server to listen")
        wait_until(lambda: listening("127.0.0.1", self.port), 10, "the port to accept")
        return self

    def _one_listening_port(self) -> int:
        """The one port the server listens on, 0 while it does not (yet)."""
        process = self._running()
        try:
            ports = listening_ports(process.pid)
        except psutil.NoSuchProcess:
            return 0
        return next(iter(ports)) if len(ports) == 1 else 0

    def _running(self) -> subprocess.Popen[bytes]:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited with {self.process.returncode}:\n"
                                 f"{self.log()}")
        return self.process

    def request(self, path: str, method: str = "GET",
                token: str | None = None) -> tuple[int, Any]:
        """(status, JSON body) of one request; an HTTP error status is an answer too."""
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read() or b"null")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logged(self, method: str, path: str, status: int) -> bool:
        pattern = REQUEST_LINE.format(method=method, path=re.escape(path), status=status)
        return re.search(pattern, self.log(), re.MULTILINE) is not None

    def terminate(self, timeout: float) -> int:
        """SIGTERM; the exit code, failing if the server takes longer than ``timeout`` s."""
        process = self._running()
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server ignored SIGTERM for {timeout} s:\n"
                                 f"{self.log()}") from None


@pytest.fixture
def workers(broker: str, queue_name: str) -> Iterator[list[WorkerProcess]]:
    """Two observed workers on the test's queue and remote-control exchange."""
    yield from answering_workers(broker, queue_name)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A token file as the --help says to make one (with its trailing newline)."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def start_server(broker: str, queue_name: str,
                 tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Starts `observe serve` with extra arguments; ends every one started afterwards."""
    servers: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        server = ServeProcess(broker, queue_name, tmp_path / f"serve-{len(servers)}.log", *args)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        if server.process is not None:
            end_process(server.process, timeout=10)


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`celery -A tests.workerapp observe serve ...` run to its end."""
    return subprocess.run([sys.executable, "-m", "celery", "-A", "tests.workerapp", "observe",
                           "serve", *args], cwd=REPO, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.broker
def test_health_and_workers_status_name_both_workers(
        start_server: Callable[..., ServeProcess], workers: list[WorkerProcess]) -> None:
    """GET health and workers/status answer 200 with both workers online."""
    server = start_server()
    names = sorted(worker.hostname for worker in workers)
    status, health = server.request(f"{PREFIX}/health")
    assert (status, health["status"], health["workers"]["active_workers"]) == (
        200, "healthy", names), health
    status, listed = server.request(f"{PREFIX}/workers/status")
    assert status == 200
    assert [(w["name"], w["status"]) for w in listed["workers"]] == [
        (name, "online") for name in names]


@pytest.mark.broker
def test_the_bound_url_is_logged(start_server: Callable[..., ServeProcess],
                                 workers: list[WorkerProcess]) -> None:
    """With --port 0 the log names the port the OS gave, with the prefix."""
    server = start_server()
    assert (f"serving the cluster API on http://127.0.0.1:{server.port}{PREFIX}"
            in server.log()), server.log()


@pytest.mark.broker
def test_each_request_is_logged_with_path_status_and_ms(
        start_server: Callable[..., ServeProcess], workers: list[WorkerProcess]) -> None:
    """One line per request: method, the path without its query string, status, ms."""
    server = start_server()
    assert server.request(f"{PREFIX}/health?use_cache=false&secret=hidden-query")[0] == 200
    assert server.request(f"{PREFIX}/no-such-endpoint")[0] == 404
    wait_until(lambda: server.logged("GET", f"{PREFIX}/health", 200), 10, "the health line")
    wait_until(lambda: server.logged("GET", f"{PREFIX}/no-such-endpoint", 404), 10,
               "the 404 line")
    assert "hidden-query" not in server.log()


@pytest.mark.broker
def test_revoke_with_the_token_from_the_file_is_accepted(
        start_server: Callable[..., ServeProcess], workers: list[WorkerProcess],
        token_file: Path) -> None:
    """POST revoke with the file's token (its newline stripped) answers 202."""
    server = start_server("--token-file", str(token_file))
    task_id = str(uuid.uuid4())
    status, body = server.request(f"{PREFIX}/tasks/{task_id}/revoke", "POST", TOKEN)
    assert (status, body["task_id"], body["revoked"]) == (202, task_id, True), body


@pytest.mark.broker
def test_revoke_without_the_token_is_unauthorized(
        start_server: Callable[..., ServeProcess], workers: list[WorkerProcess],
        token_file: Path) -> None:
    """POST revoke with no token, or another one, answers 401."""
    server = start_server("--token-file", str(token_file))
    path = f"{PREFIX}/tasks/{uuid.uuid4()}/revoke"
    assert server.request(path, "POST")[0] == 401
    assert server.request(path, "POST", "not-the-token-but-long-enough")[0] == 401


@pytest.mark.broker
def test_revoke_is_off_without_a_token_file(
        start_server: Callable[..., ServeProcess], workers: list[WorkerProcess]) -> None:
    """With no --token-file, revoke answers 403 even to a bearer token."""
    server = start_server()
    assert server.request(f"{PREFIX}/tasks/{uuid.uuid4()}/revoke", "POST", TOKEN)[0] == 403


@pytest.mark.broker
def test_the_token_appears_in_no_log_line_and_not_in_ps(
        start_server: Callable[..., ServeProcess], workers: list[WorkerProcess],
        token_file: Path) -> None:
    """Requests sending the token, accepted or not, leave it out of the log and the cmdline."""
    server = start_server("--token-file", str(token_file), "--read-token-file",
                          str(token_file))
    revoke = f"{PREFIX}/tasks/{uuid.uuid4()}/revoke"
    assert server.request(f"{PREFIX}/health", token=TOKEN)[0] == 200
    assert server.request(revoke, "POST", TOKEN)[0] == 202
    assert server.request(f"{PREFIX}/no-such-endpoint", token=TOKEN)[0] == 404
    assert server.request(f"{PREFIX}/health")[0] == 401
    assert server.process is not None
    assert TOKEN not in " ".join(psutil.Process(server.process.pid).cmdline())
    assert server.terminate(10) == 0  # every line is written once it has exited
    assert server.logged("POST", revoke, 202) and server.logged("GET", f"{PREFIX}/health", 401)
    assert TOKEN not in server.log(), server.log()


@pytest.mark.broker
def test_sigterm_stops_an_idle_server_with_exit_0_and_frees_the_port(
        start_server: Callable[..., ServeProcess], workers: list[WorkerProcess]) -> None:
    """SIGTERM: exit 0 within a few seconds, lifespan shutdown run, port free again."""
    server = start_server()
    assert server.request(f"{PREFIX}/health")[0] == 200
    started = time.monotonic()
    assert server.terminate(10) == 0, server.log()
    assert time.monotonic() - started < 5
    assert "Application shutdown complete" in server.log()
    assert not listening("127.0.0.1", server.port)


@pytest.mark.broker
def test_sigterm_lets_an_in_flight_request_finish(
        start_server: Callable[..., ServeProcess], workers: list[WorkerProcess]) -> None:
    """A request waiting on a silent worker when SIGTERM comes still gets its 200, then exit 0."""
    server = start_server("--timeout", "3")
    assert server.request(f"{PREFIX}/workers/status")[0] == 200  # both workers are known now
    silent = workers[1]
    assert silent.process is not None
    answers: list[tuple[int, Any]] = []
    asking = threading.Thread(target=lambda: answers.append(
        server.request(f"{PREFIX}/workers/status?use_cache=false")))
    os.kill(silent.process.pid, signal.SIGSTOP)
    try:
        asking.start()
        assert server.process is not None
        serving = psutil.Process(server.process.pid)
        wait_until(lambda: any(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port
                               for c in serving.net_connections(kind="tcp")),
                   10, "the request to reach the server")
        assert server.terminate(15) == 0, server.log()
        asking.join(10)
        assert not asking.is_alive()
    finally:
        os.kill(silent.process.pid, signal.SIGCONT)
    status, body = answers[0]
    assert status == 200, body
    assert [w["status"] for w in body["workers"]] == ["online", "missing"], body


def test_a_short_token_file_is_a_usage_error(tmp_path: Path) -> None:
    """A token under 16 characters: exit 2, naming the file and how to make a token."""
    short = tmp_path / "short-token"
    short.write_text("too-short\n")
    result = run_serve("--token-file", str(short))
    assert result.returncode == 2, result.stderr
    assert str(short) in result.stderr and "at least 16" in result.stderr
    assert "python -c 'import secrets; print(secrets.token_urlsafe(32))' >" in result.stderr


def test_an_events_interval_under_a_tenth_of_a_second_is_a_usage_error() -> None:
    """`--events-interval 0.05`: exit 2, naming the option and its range."""
    result = run_serve("--events-interval", "0.05")
    assert result.returncode == 2, result.stderr
    assert "--events-interval" in result.stderr and "0.1" in result.stderr


def test_a_missing_token_file_is_a_usage_error(tmp_path: Path) -> None:
    """A token file that does not exist: exit 2, naming it and how to make a token."""
    missing = tmp_path / "no-such-token"
    result = run_serve("--read-token-file", str(missing))
    assert result.returncode == 2, result.stderr
    assert f"cannot read the token file {missing}" in result.stderr
    assert "secrets.token_urlsafe(32)" in result.stderr


@pytest.fixture
def without_api(tmp_path: Path) -> dict[str, str]:
    """An environment in which FastAPI and uvicorn fail to import, as on a worker-only install."""
    for name in ("fastapi", "uvicorn"):
        stub = tmp_path / name
        stub.mkdir()
        (stub / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named \'{name}\'", name="{name}")\n')
    path = os.pathsep.join(filter(None, [str(tmp_path), str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def test_without_fastapi_serve_exits_2_with_the_install_command(
        without_api: dict[str, str]) -> None:
    """`observe serve` without the api extra: exit 2 and the pip command that adds it."""
    result = run_serve(env=without_api)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "pip install 'celery-observe[api]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_fastapi_the_other_commands_still_load(without_api: dict[str, str]) -> None:
    """A worker-only install still gets `celery observe` and its `serve --help`."""
    result = subprocess.run([sys.executable, "-m", "celery", "-A", "tests.workerapp", "observe",
                             "serve", "--help"], cwd=REPO, env=without_api,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--token-file FILE" in result.stdout
