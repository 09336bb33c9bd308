"""No output of celery-observe shows a broker or backend password, or a task's arguments.

A password-protected redis-server of the test's own is broker and result backend, with a
password no other text contains. An observed worker (logging at debug level) runs a task
that succeeded, one that failed and one that is still running with secret-looking
arguments; then every output a user or a scraper can get is collected (HTTP endpoints,
remote-control replies, the Cluster client, every CLI command with and without --json,
``celery inspect stats``, the worker's whole log) and grepped for the password and the
arguments. Error paths (server down, wrong password) are grepped the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pytest
from celery import Celery

from celery_observe import Cluster
from celery_observe.cluster.client import BrokerUnreachableError
from celery_observe.redaction import REDACTED
from celery_observe.testing import free_port, wait_until

from ..conftest import broker_url, running
from ..servers import PrivateRedis
from ..workers import REPO, SERVING, WorkerProcess

pytestmark = pytest.mark.broker

APP = "tests.workerapp"
TASKS = "tests.workerapp"
SECRET_ARG = "card-4111-secret-arg"
SECRET_KWARG = "kw-secret-note"
HOLD_SECONDS = 300  # longer than the module runs; the worker is stopped cold (SIGQUIT)
COMMANDS = ("observe_status", "observe_health", "observe_tasks", "observe_history",
            "observe_summary", "observe_cache_stats", "observe_cache_invalidate")
CLI_COMMANDS = (("health",), ("status",), ("workers",), ("tasks",), ("queues",),
                ("history", "-n", "5"))


def leaks(outputs: dict[str, str], needles: Iterable[str]) -> dict[str, list[str]]:
    """For each output that contains any of ``needles``: which ones (empty: no leak)."""
    found = {name: [needle for needle in needles if needle in text]
             for name, text in outputs.items()}
    return {name: hits for name, hits in found.items() if hits}


Started = dict[str, "subprocess.Popen[str]"]


def start_cli(env: dict[str, str], commands: Iterable[tuple[str, ...]]) -> Started:
    """Start ``celery -A tests.workerapp <args>`` for each of ``commands``, named "cli <args>".

    They run at once: against a dead broker each one waits out kombu's connection retries.
    """
    return {f"cli {' '.join(args)}": subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", APP, *args], cwd=REPO, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in commands}


def finish(started: Started) -> dict[str, str]:
    """Exit code, stdout and stderr of each started command."""
    outputs = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=120)
        outputs[name] = f"exit {process.returncode}\n--- stdout\n{stdout}--- stderr\n{stderr}"
    return outputs


def cli(env: dict[str, str], *args: str) -> str:
    """One CLI command's exit code, stdout and stderr."""
    (output,) = finish(start_cli(env, [args])).values()
    return output


def app_env(broker: str, backend: str | None, queue: str) -> dict[str, str]:
    return {"CELERY_OBSERVE_TEST_BROKER": broker, "CELERY_OBSERVE_TEST_BACKEND": backend or "",
            "CELERY_OBSERVE_TEST_QUEUE": queue}


def client_app(broker: str, backend: str | None, queue: str) -> Celery:
    app = Celery("secrets-client", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(control_exchange=queue, broker_connection_retry_on_startup=True)
    return app


@dataclass
class Observed:
    """A running observed worker and the app a client uses to reach it."""

    worker: WorkerProcess
    client: Celery
    env: dict[str, str]
    queue: str


@contextlib.contextmanager
def observe(broker: str, backend: str | None, extra_args: tuple[str, ...] = (),
            pool: str = "prefork") -> Iterator[Observed]:
    """A debug-level worker: add and boom done, hold(secret) running and one scheduled."""
    queue = f"observe-test-{uuid.uuid4().hex[:12]}"
    env = app_env(broker, backend, queue)
    worker = WorkerProcess(broker, queue, app=APP, env=env, pool=pool, concurrency=2,
                           extra_args=("-l", "debug", *extra_args))
    client = client_app(broker, backend, queue)
    try:
        worker.start()
        wait_until(lambda: client.control.ping(timeout=0.5), 20, "the worker to answer pings")
        client.send_task(f"{TASKS}.add", (1, 2), queue=queue)
        client.send_task(f"{TASKS}.boom", queue=queue)
        hold = client.send_task(f"{TASKS}.hold", (SECRET_ARG, HOLD_SECONDS),
                                {"note": SECRET_KWARG}, queue=queue)
        later = client.send_task(f"{TASKS}.hold", (SECRET_ARG, 0), {"note": SECRET_KWARG},
                                 queue=queue, countdown=HOLD_SECONDS)
        with Cluster(client, timeout=5, discovery_timeout=1, use_cache=False) as cluster:
            wait_until(lambda: len(cluster.history(10)["tasks"]) == 2, 20, "add and boom")
            wait_until(lambda: [[t["id"] for t in tasks[kind]] for tasks in [cluster.tasks()]
                                for kind in ("running", "scheduled")] == [[hold.id], [later.id]],
                       20, "hold to run and the later one to wait")
        yield Observed(worker, client, env, queue)
    finally:
        worker.stop(signal.SIGQUIT)  # cold: hold would keep a warm shutdown waiting
        with client.connection_for_write() as connection:
            channel = connection.default_channel
            if broker.startswith("redis"):
                channel.client.delete(*channel.client.keys(f"{queue}*") or [queue])
            else:
                channel.queue_delete(queue)
        client.close()


def collect(observed: Observed, cli_commands: Iterable[tuple[str, ...]] = CLI_COMMANDS,
            ) -> dict[str, str]:
    """Every output of an observed worker and its clients, by name; stops the worker last."""
    outputs: dict[str, str] = {}
    worker, client = observed.worker, observed.client
    for path in ("/metrics", "/healthz", "/readyz", "/status", "/no-such-page"):
        status, headers, body = worker.get(path)
        outputs[f"http {path}"] = f"{status}\n{json.dumps(headers)}\n{body.decode()}"
    for command, arguments in [*((c, {}) for c in COMMANDS), ("observe_history", {"limit": 0}),
                               ("observe_cache_invalidate", {"cache_name": "no-such-cache"})]:
        replies = client.control.broadcast(command, arguments=arguments, reply=True,
                                           timeout=5, limit=1)
        outputs[f"broadcast {command} {arguments}"] = json.dumps(replies)
    with Cluster(client, timeout=5, discovery_timeout=1, use_cache=False) as cluster:
        for command in COMMANDS:
            outputs[f"cluster ask {command}"] = json.dumps(cluster.ask(command))
        for name, method in (("status", cluster.status), ("health", cluster.health),
                             ("tasks", cluster.tasks), ("history", cluster.history),
                             ("summary", cluster.summary), ("queues", cluster.queues)):
            outputs[f"cluster {name}"] = json.dumps(method(), default=str)
        outputs["cluster broker_url"] = cluster.broker_url
    for command in cli_commands:
        outputs[f"cli {' '.join(command)}"] = cli(observed.env, "observe", *command)
        outputs[f"cli {' '.join(command)} --json"] = cli(observed.env, "observe", *command,
                                                         "--json")
    outputs["cli top"] = cli(observed.env, "observe", "top", "--iterations", "1")
    for command in ("stats", "observe_tasks"):
        outputs[f"inspect {command}"] = cli(observed.env, "inspect", command, "--json",
                                            "-d", worker.hostname, "-t", "5")
    worker.stop(signal.SIGQUIT)
    outputs["worker log"] = worker.log()
    return outputs


# --- Redis with a password, as broker and result backend ----------------------------------

@pytest.fixture(scope="module")
def password() -> str:
    return f"s3cret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def secured_redis(password: str) -> Iterator[PrivateRedis]:
    """A redis-server of the module's own that requires the password."""
    yield from running(PrivateRedis(password=password))


@pytest.fixture(scope="module")
def redis_outputs(secured_redis: PrivateRedis) -> Iterator[dict[str, str]]:
    """Every output of an observed worker on the secured Redis, collected once."""
    with observe(secured_redis.url(0), secured_redis.url(1)) as observed:
        yield collect(observed)


def only(outputs: dict[str, str], prefix: str) -> dict[str, str]:
    chosen = {name: text for name, text in outputs.items() if name.startswith(prefix)}
    assert chosen, f"no output named {prefix}..."
    return chosen


def secrets(password: str) -> list[str]:
    return [password, SECRET_ARG, SECRET_KWARG]


def test_http_endpoints_show_no_password_or_arguments(
        redis_outputs: dict[str, str], password: str) -> None:
    """/metrics, /healthz, /readyz, /status and a 404 page hold neither secret."""
    endpoints = only(redis_outputs, "http ")
    assert len(endpoints) == 5
    assert leaks(endpoints, secrets(password)) == {}
    assert endpoints["http /status"].startswith("200\n")


def test_remote_command_replies_show_no_password_or_arguments(
        redis_outputs: dict[str, str], password: str) -> None:
    """Every observe_* reply, raw or through Cluster, error replies too, holds neither secret."""
    replies = {**only(redis_outputs, "broadcast "), **only(redis_outputs, "cluster ")}
    assert len(replies) == 9 + 7 + 7
    assert leaks(replies, secrets(password)) == {}
    tasks = json.loads(redis_outputs["cluster tasks"])
    assert [(kind, t["name"], t["args"], t["kwargs"]) for kind in ("running", "scheduled")
            for t in tasks[kind]] == [("running", f"{TASKS}.hold", REDACTED, REDACTED),
                                      ("scheduled", f"{TASKS}.hold", REDACTED, REDACTED)]


def test_cluster_shows_the_broker_with_its_password_masked(
        redis_outputs: dict[str, str], secured_redis: PrivateRedis) -> None:
    """Cluster.status()['broker'] is the broker URL with ** for the password."""
    masked = f"redis://:**@127.0.0.1:{secured_redis.port}/0"
    assert redis_outputs["cluster broker_url"] == masked
    assert json.loads(redis_outputs["cluster status"])["broker"] == masked


def test_cli_output_shows_no_password_or_arguments(
        redis_outputs: dict[str, str], password: str, secured_redis: PrivateRedis) -> None:
    """Every `celery observe` command, as a table and as JSON, exits 0 and holds neither secret."""
    outputs = only(redis_outputs, "cli ")
    assert len(outputs) == 2 * len(CLI_COMMANDS) + 1
    assert {name: text.partition("\n")[0] for name, text in outputs.items()
            if not text.startswith("exit 0\n")} == {}
    assert leaks(outputs, secrets(password)) == {}
    assert f"(broker redis://:**@127.0.0.1:{secured_redis.port}/0)" in outputs["cli status"]
    assert f'"args": "{REDACTED}"' in outputs["cli tasks --json"]


def test_inspect_stats_shows_no_password_or_arguments(
        redis_outputs: dict[str, str], password: str) -> None:
    """`celery inspect stats` (our step's info()) and `inspect observe_tasks` hold neither."""
    outputs = only(redis_outputs, "inspect ")
    assert leaks(outputs, secrets(password)) == {}
    stats = json.loads(outputs["inspect stats"].split("--- stdout\n")[1].split("--- stderr")[0])
    (worker_stats,) = stats.values()
    assert set(worker_stats["celery_observe"]) == {"address", "port"}
    assert "password" not in worker_stats["broker"]


def test_worker_debug_log_shows_no_password_or_arguments(
        redis_outputs: dict[str, str], password: str, secured_redis: PrivateRedis,
        figure: Callable[[str, str], None]) -> None:
    """The whole worker log at debug level, banner to shutdown, holds neither secret."""
    log = redis_outputs["worker log"]
    assert leaks({"worker log": log}, secrets(password)) == {}
    assert f"transport:   redis://:**@127.0.0.1:{secured_redis.port}/0" in log  # Celery's banner
    assert f"results:     redis://:**@127.0.0.1:{secured_redis.port}/1" in log
    assert f"(args:{REDACTED} kwargs:{REDACTED})" in log  # Celery's TaskPool line, redacted
    figure("outputs grepped", f"{len(redis_outputs)} outputs, "
           f"{sum(len(text) for text in redis_outputs.values())} characters")


# --- error paths ------------------------------------------------------------------------

def test_server_down_cli_and_cluster_show_no_password(password: str) -> None:
    """With nothing listening at the URL, every CLI command and Cluster mask the password."""
    broker_url("redis")
    port = free_port()
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    env = app_env(url, f"redis://:{password}@127.0.0.1:{port}/1", "observe-test-down")
    masked = f"(broker redis://:**@127.0.0.1:{port}/0)"
    started = start_cli(env, [("observe", *command) for command in [
        *CLI_COMMANDS, ("health", "--json"), ("status", "--json"), ("top", "--iterations", "1")]])
    outputs = {}
    client = client_app(url, None, "observe-test-down")
    with Cluster(client, timeout=1, discovery_timeout=0.5) as cluster:
        with pytest.raises(BrokerUnreachableError) as raised:
            cluster.status()
        outputs["Cluster.status() error"] = str(raised.value)
        outputs["Cluster.health()"] = json.dumps(cluster.health())
    client.close()
    outputs.update(finish(started))
    assert leaks(outputs, [password]) == {}
    assert outputs["Cluster.status() error"].endswith(masked)
    assert json.loads(outputs["Cluster.health()"])["status"] == "unhealthy"
    for name, text in outputs.items():
        if name.startswith("cli observe health"):
            assert text.startswith("exit 2\n") and masked in text, text
        elif name.startswith("cli observe top"):
            assert text.startswith("exit 0\n") and masked in text, text
        elif name.startswith("cli "):
            assert text.startswith("exit 2\n") and text.endswith(f"{masked}\n"), text


def test_wrong_password_cli_and_cluster_show_no_password(
        secured_redis: PrivateRedis, password: str) -> None:
    """An AUTH failure is reported as such, with neither the right nor the wrong password."""
    wrong = f"wrong-{password}"  # contains the right one: a leak of either is found
    url = f"redis://:{wrong}@127.0.0.1:{secured_redis.port}/0"
    env = app_env(url, f"redis://:{wrong}@127.0.0.1:{secured_redis.port}/1", "observe-test-auth")
    started = start_cli(env, [("observe", command, *json_flag) for command in
                              ("status", "health", "tasks") for json_flag in ((), ("--json",))])
    outputs = {}
    client = client_app(url, None, "observe-test-auth")
    with Cluster(client, timeout=1, discovery_timeout=0.5) as cluster:
        with pytest.raises(BrokerUnreachableError) as raised:
            cluster.tasks()
        outputs["Cluster.tasks() error"] = str(raised.value)
    client.close()
    outputs.update(finish(started))
    assert leaks(outputs, [password]) == {}
    assert outputs["Cluster.tasks() error"] == (
        "OperationalError: invalid username-password pair or user is disabled. "
        f"(broker redis://:**@127.0.0.1:{secured_redis.port}/0)")
    assert all("invalid username-password pair" in text for text in outputs.values()), outputs


def launch(worker: WorkerProcess) -> None:
    """Start ``worker`` and wait for its HTTP server only (its broker refuses it)."""
    with worker.log_path.open("wb") as log:
        worker.process = subprocess.Popen(worker.args, cwd=REPO, env=worker.env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
    match = wait_until(lambda: SERVING.search(worker.log()), 30, "the worker to serve")
    worker.port = int(match.group("port"))


def test_worker_refused_by_the_broker_logs_and_serves_no_password(
        secured_redis: PrivateRedis, password: str) -> None:
    """A worker with a wrong password: probes, /metrics and its debug log hold no password."""
    wrong = f"wrong-{password}"
    url = f"redis://:{wrong}@127.0.0.1:{secured_redis.port}/0"
    queue = f"observe-test-{uuid.uuid4().hex[:12]}"
    worker = WorkerProcess(url, queue, app=APP, pool="threads", concurrency=1,
                           env=app_env(url, None, queue), extra_args=("-l", "debug"))
    try:
        launch(worker)
        wait_until(lambda: "Cannot connect to redis://:**@" in worker.log(), 30,
                   "Celery to report the refused connection")
        outputs = {f"http {path}": worker.get(path)[2].decode()
                   for path in ("/metrics", "/healthz", "/readyz", "/status")}
        wait_until(lambda: "celery-observe: queues failed" in worker.log(), 10,
                   "the queue-length fault to be logged")
    finally:
        worker.stop(signal.SIGQUIT)
    outputs["worker log"] = worker.log()
    assert leaks(outputs, [password]) == {}
    assert "AuthenticationError: invalid username-password pair" in outputs["worker log"]
    assert json.loads(outputs["http /readyz"])["status"] == "not ready"


# --- with --observe-show-task-args the arguments are shown ----------------------------------

def test_show_task_args_shows_the_arguments_where_documented(
        secured_redis: PrivateRedis, password: str) -> None:
    """With --observe-show-task-args, observe tasks and Celery's debug line show them."""
    with observe(secured_redis.url(0), secured_redis.url(1),
                 extra_args=("--observe-show-task-args",)) as observed:
        with Cluster(observed.client, timeout=5, use_cache=False) as cluster:
            running_tasks = cluster.tasks()["running"]
        as_json = cli(observed.env, "observe", "tasks", "--json")
        observed.worker.stop(signal.SIGQUIT)
        log = observed.worker.log()
    assert [(t["args"], t["kwargs"]) for t in running_tasks] == [
        (repr((SECRET_ARG, HOLD_SECONDS)), repr({"note": SECRET_KWARG}))]
    assert SECRET_ARG in as_json and SECRET_KWARG in as_json
    assert f"'argsrepr': \"('{SECRET_ARG}', {HOLD_SECONDS})\"" in log
    assert password not in as_json + log


# --- RabbitMQ: guest:guest is the password everyone knows --------------------------------

GUEST_SECRETS = [":guest@", "'password': 'guest'", '"password": "guest"', SECRET_ARG,
                 SECRET_KWARG]


@pytest.fixture(scope="module")
def rabbit_outputs() -> Iterator[dict[str, str]]:
    """The outputs of an observed worker on RabbitMQ, collected once (fewer CLI commands)."""
    with observe(broker_url("rabbitmq"), None) as observed:
        yield collect(observed, cli_commands=(("status",), ("health",), ("tasks",)))


def test_rabbitmq_outputs_show_no_password_or_arguments(
        rabbit_outputs: dict[str, str]) -> None:
    """On RabbitMQ, endpoints, replies, CLI, inspect stats and the log hold neither secret."""
    assert leaks(rabbit_outputs, GUEST_SECRETS) == {}
    assert "(broker amqp://guest:**@127.0.0.1:5672//)" in rabbit_outputs["cli status"]
    assert "transport:   amqp://guest:**@127.0.0.1:5672//" in rabbit_outputs["worker log"]


def test_rabbitmq_down_cli_shows_no_password() -> None:
    """With nothing listening at the AMQP URL, `observe status` masks the password."""
    broker_url("rabbitmq")
    port = free_port()
    url = f"amqp://guest:guest@127.0.0.1:{port}//"
    env = app_env(url, None, "observe-test-down")
    outputs = finish(start_cli(env, [("observe", "status"), ("observe", "status", "--json")]))
    assert leaks(outputs, GUEST_SECRETS) == {}
    assert all(text.startswith("exit 2\n")
               and text.endswith(f"(broker amqp://guest:**@127.0.0.1:{port}//)\n")
               for text in outputs.values()), outputs
