"""The Django integration in a real Django project (tests/djangoproject) against real workers.

Django's settings, app registry and Celery's current app are process-wide, and the other
tests share this pytest process, so Django only ever runs in subprocesses: the views
through ``django.test.Client`` in tests/djangoproject/drive.py (one long-lived process per
test, as a web server's would be, so the views' ``Cluster`` and its caches live across
requests), and ``manage.py celery_health`` as an operator or an exec probe runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest
from celery import Celery

from celery_observe.testing import wait_until

from .workers import REPO, WorkerProcess

pytest.importorskip("django", reason="django is not installed: pip install django")

broker_test = pytest.mark.broker
MANAGE = REPO / "tests" / "djangoproject" / "manage.py"
TOKEN = "a-token-of-the-test-project-0123456789"
PASSWORD = "pw-never-shown-4711"
#: A broker that refuses connections, with a password that must show up nowhere.
DOWN_BROKER = f"redis://:{PASSWORD}@127.0.0.1:1/0"
API = "/api/celery"


def project_env(broker: str, queue: str, token: str | None = None) -> dict[str, str]:
    """The environment tests/djangoproject/settings.py reads."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("CELERY_OBSERVE_TEST_TOKEN", "DJANGO_SETTINGS_MODULE")}
    env.update(CELERY_OBSERVE_TEST_BROKER=broker, CELERY_OBSERVE_TEST_QUEUE=queue,
               DJANGO_SETTINGS_MODULE="tests.djangoproject.settings")
    if token is not None:
        env["CELERY_OBSERVE_TEST_TOKEN"] = token
    return env


def manage(broker: str, queue: str, *args: str,
           token: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python tests/djangoproject/manage.py ...`` as an operator runs it."""
    return subprocess.run([sys.executable, str(MANAGE), *args], cwd=REPO,
                          env=project_env(broker, queue, token), capture_output=True,
                          text=True, timeout=60)


class DjangoProject:
    """The test project serving requests with ``django.test.Client`` in a subprocess."""

    def __init__(self, broker: str, queue: str, token: str | None = None) -> None:
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  # closed in close()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.djangoproject.drive"], cwd=REPO,
            env=project_env(broker, queue, token), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.stderr, text=True)

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.stderr.seek(0)
            raise AssertionError(f"the Django process died:\n{self.stderr.read().decode()}")
        answer: dict[str, Any] = json.loads(line)
        assert "exception" not in answer, answer["exception"]
        return answer

    def request(self, path: str, method: str = "GET", **headers: str) -> dict[str, Any]:
        """The answer to ``method path``: its status, headers and ``json`` (or ``text``)."""
        return self.ask({"method": method, "path": f"{API}/{path}", "headers": headers})

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.stderr.close()


@pytest.fixture
def make_project() -> Iterator[Callable[..., DjangoProject]]:
    """Start test projects; stop them afterwards."""
    started: list[DjangoProject] = []

    def make(broker: str, queue: str, token: str | None = None) -> DjangoProject:
        started.append(DjangoProject(broker, queue, token))
        return started[-1]

    yield make
    for project in started:
        project.close()


@pytest.fixture
def down_project(make_project: Callable[..., DjangoProject]) -> DjangoProject:
    """The project with a broker that refuses connections, and a token set."""
    return make_project(DOWN_BROKER, "observe-test-down", TOKEN)


def wait_for_pings(broker: str, queue: str, count: int) -> None:
    """Ready for tasks is not yet subscribed to broadcasts: wait until ``count`` answer."""
    probe = Celery("probe", broker=broker, set_as_current=False)
    probe.conf.control_exchange = queue
    try:
        wait_until(lambda: len(probe.control.ping(timeout=0.5)) == count, 20,
                   f"{count} workers to answer pings")
    finally:
        probe.close()


@pytest.fixture
def slow_queue(broker: str, client: Celery, queue_name: str) -> Iterator[str]:
    """The project's second queue (settings.py routes tests.workerapp.sleep to it)."""
    name = f"{queue_name}-slow"
    yield name
    if broker.startswith("amqp"):  # the client fixture removes it from Redis
        with client.connection_for_write() as connection, contextlib.suppress(Exception):
            connection.default_channel.queue_delete(name)


@pytest.fixture
def two_workers(broker: str, queue_name: str, slow_queue: str) -> Iterator[list[WorkerProcess]]:
    """A worker on each of the project's queues, both on the test's control exchange."""
    workers = [WorkerProcess(broker, queue_name, pool="threads", name=f"{queue_name}-a"),
               WorkerProcess(broker, slow_queue, pool="threads", name=f"{queue_name}-b",
                             env={"CELERY_OBSERVE_TEST_QUEUE": queue_name})]
    for worker in workers:
        worker.launch()
    for worker in workers:
        worker.wait_ready()
    wait_for_pings(broker, queue_name, 2)
    yield workers
    for worker in workers:
        worker.stop()


@pytest.fixture
def worker(broker: str, queue_name: str) -> Iterator[WorkerProcess]:
    """One prefork worker on the project's default queue (prefork can terminate tasks)."""
    process = WorkerProcess(broker, queue_name, pool="prefork", concurrency=2)
    process.start()
    wait_for_pings(broker, queue_name, 1)
    yield process
    process.stop()


# --- without a broker -------------------------------------------------------------------


def test_importing_the_integration_loads_no_fastapi_and_no_worker_code() -> None:
    """The views and the command need Django only: no FastAPI, Prometheus client or psutil."""
    code = ("import json, sys; import celery_observe.contrib.django.views, "
            "celery_observe.contrib.django.management.commands.celery_health; "
            "print(json.dumps(sorted(m for m in ('fastapi', 'starlette', 'prometheus_client', "
            "'psutil', 'celery_observe.worker', 'celery_observe.cluster.api') "
            "if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=True)
    assert json.loads(result.stdout) == []


def test_health_is_503_unhealthy_when_the_broker_is_down(down_project: DjangoProject) -> None:
    """A broker that refuses connections makes health a 503 with the seed's unhealthy body."""
    answer = down_project.request("health/")
    assert answer["status"] == 503
    body = answer["json"]
    assert (body["status"], body["broker_connected"], body["workers"]["healthy"]) == (
        "unhealthy", False, False)
    assert body["message"].startswith("the broker cannot be reached: ")
    assert body["recommendations"][0].startswith("Check that the broker")


def test_status_is_200_disconnected_when_the_broker_is_down(down_project: DjangoProject) -> None:
    """Status answers 200 ``connected: false`` with the reason, not a server error."""
    answer = down_project.request("status/")
    assert answer["status"] == 200
    body = answer["json"]
    assert body["connected"] is False
    assert "127.0.0.1:1" in body["error"] and body["broker"] == "redis://:**@127.0.0.1:1/0"


def test_listings_are_503_with_the_reason_when_the_broker_is_down(
        down_project: DjangoProject) -> None:
    """Tasks, stats and history answer 503 ``connected: false`` naming the broker."""
    for path in ("tasks/", "stats/", "history/"):
        answer = down_project.request(path)
        assert answer["status"] == 503, (path, answer)
        assert answer["json"]["connected"] is False
        assert "redis://:**@127.0.0.1:1/0" in answer["json"]["detail"]


def test_no_answer_shows_the_broker_password(down_project: DjangoProject) -> None:
    """Every endpoint's body, errors included, has the broker password masked."""
    answers = [down_project.request(path) for path in (
        "health/", "status/", "tasks/", "stats/", "history/?limit=5")]
    answers.append(down_project.request("tasks/some-id/revoke/", method="POST",
                                        Authorization=f"Bearer {TOKEN}"))
    assert answers[-1]["status"] == 503
    assert all("json" in answer for answer in answers)
    assert PASSWORD not in json.dumps(answers)


def test_history_rejects_bad_searches_with_400(down_project: DjangoProject) -> None:
    """A limit out of 1-1000, or an unknown state, is a 400 saying what is accepted."""
    for query, expected in (("limit=0", "limit is a whole number"),
                            ("limit=many", "limit is a whole number"),
                            ("limit=1001", "limit is a whole number"),
                            ("state=lost", "state is one of success, failure")):
        answer = down_project.request(f"history/?{query}")
        assert answer["status"] == 400, (query, answer)
        assert answer["json"]["detail"].startswith(expected)


def test_revoke_is_403_naming_the_setting_without_a_token(
        make_project: Callable[..., DjangoProject]) -> None:
    """With no token configured, revoking is off, and the answer says how to turn it on."""
    project = make_project(DOWN_BROKER, "observe-test-down")
    answer = project.request("tasks/some-id/revoke/", method="POST",
                             Authorization=f"Bearer {TOKEN}")
    assert answer["status"] == 403
    assert "CELERY_OBSERVE_API_TOKEN" in answer["json"]["detail"]


def test_revoke_is_401_without_the_right_token(down_project: DjangoProject) -> None:
    """No header, another scheme or a wrong token: 401 with WWW-Authenticate: Bearer."""
    for headers in ({}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer "}):
        answer = down_project.request("tasks/some-id/revoke/", method="POST", **headers)
        assert answer["status"] == 401, (headers, answer)
        assert answer["headers"]["WWW-Authenticate"] == "Bearer"


def test_revoke_only_accepts_post(down_project: DjangoProject) -> None:
    """GET on the revoke endpoint is 405, so a crawler or a prefetch revokes nothing."""
    answer = down_project.request("tasks/some-id/revoke/", Authorization=f"Bearer {TOKEN}")
    assert answer["status"] == 405


def test_the_endpoints_are_named_in_the_celery_observe_namespace(
        down_project: DjangoProject) -> None:
    """``reverse("celery_observe:<name>")`` finds each endpoint under the include()'s prefix."""
    urls = {name: down_project.ask({"reverse": f"celery_observe:{name}"})["url"]
            for name in ("health", "status", "tasks", "stats", "history")}
    assert urls == {name: f"{API}/{name}/"
                    for name in ("health", "status", "tasks", "stats", "history")}
    revoke = down_project.ask({"reverse": "celery_observe:revoke", "kwargs": {"task_id": "x-1"}})
    assert revoke["url"] == f"{API}/tasks/x-1/revoke/"


def test_a_short_token_stops_the_project_at_startup() -> None:
    """A token under 16 characters fails ``manage.py check``, naming the setting."""
    result = manage(DOWN_BROKER, "observe-test-down", "check", token="short")
    assert result.returncode != 0
    assert "CELERY_OBSERVE_API_TOKEN: a token needs at least 16 characters" in result.stderr


def test_celery_health_exits_2_when_the_broker_is_down() -> None:
    """``manage.py celery_health`` says UNHEALTHY and exits 2, with the password masked."""
    result = manage(DOWN_BROKER, "observe-test-down", "celery_health", "--verbose")
    assert result.returncode == 2, result.stderr
    assert result.stdout.startswith("UNHEALTHY: the broker cannot be reached")
    assert PASSWORD not in result.stdout + result.stderr


def test_celery_health_json_prints_the_verdict() -> None:
    """``--json`` prints the whole verdict as JSON on stdout, the exit code unchanged."""
    result = manage(DOWN_BROKER, "observe-test-down", "celery_health", "--json")
    assert result.returncode == 2
    verdict = json.loads(result.stdout)
    assert (verdict["status"], verdict["broker_connected"]) == ("unhealthy", False)


def test_celery_health_refuses_bad_arguments() -> None:
    """A timeout that is no positive number, or a negative threshold, is a usage error."""
    for args, option in ((("--timeout", "0"), "--timeout"), (("--timeout", "inf"), "--timeout"),
                         (("--queue-threshold", "-1"), "--queue-threshold")):
        result = manage(DOWN_BROKER, "observe-test-down", "celery_health", *args)
        assert result.returncode == 2 and f"argument {option}: expected" in result.stderr


def test_celery_health_verbosity_0_prints_nothing() -> None:
    """``--verbosity 0`` leaves only the exit code, for probes that log stdout."""
    result = manage(DOWN_BROKER, "observe-test-down", "celery_health", "--verbosity", "0")
    assert (result.returncode, result.stdout) == (2, "")


# --- with real workers ------------------------------------------------------------------


@broker_test
def test_celery_health_exit_code_follows_the_workers(
        broker: str, client: Celery, queue_name: str, slow_queue: str,
        two_workers: list[WorkerProcess]) -> None:
    """Exit 0 naming both workers; 1 once a queue's only worker is gone; 2 with none."""
    first, second = two_workers
    result = manage(broker, queue_name, "celery_health", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("HEALTHY: All systems operational")
    assert first.hostname in result.stdout and second.hostname in result.stdout
    second.stop()
    client.send_task("tests.workerapp.sleep", (0,), queue=slow_queue)
    result = manage(broker, queue_name, "celery_health", "-v")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith(
        f"DEGRADED: queue {slow_queue!r} holds 1 tasks and no worker consumes it")
    assert f"-> Start a worker that consumes {slow_queue!r}" in result.stdout
    first.stop()
    result = manage(broker, queue_name, "celery_health", "-v")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.startswith("UNHEALTHY: No active Celery workers found")


@broker_test
def test_health_view_notices_a_worker_that_stops(
        make_project: Callable[..., DjangoProject], broker: str, queue_name: str,
        two_workers: list[WorkerProcess]) -> None:
    """200 healthy naming both; the views' long-lived client then reports the silent one."""
    project = make_project(broker, queue_name)
    answer = project.request("health/")
    assert answer["status"] == 200 and answer["json"]["status"] == "healthy", answer
    assert answer["json"]["workers"]["active_workers"] == sorted(w.hostname for w in two_workers)
    two_workers[1].stop()
    degraded = wait_until(lambda: (body := project.request("health/")["json"])["status"]
                          == "degraded" and body, 40, "health to turn degraded")
    assert degraded["message"] == f"worker {two_workers[1].hostname} stopped answering"
    assert project.request("health/")["status"] == 200


@broker_test
def test_health_view_answers_from_its_cache(
        make_project: Callable[..., DjangoProject], broker: str, queue_name: str,
        worker: WorkerProcess) -> None:
    """Polling health within its 10 s TTL gets the first answer again, not a new broadcast."""
    project = make_project(broker, queue_name)
    first = project.request("health/")["json"]
    assert first["status"] == "healthy", first
    assert [project.request("health/")["json"] for _ in range(5)] == [first] * 5


@broker_test
def test_status_view_lists_the_workers(
        make_project: Callable[..., DjangoProject], broker: str, queue_name: str,
        worker: WorkerProcess) -> None:
    """Status is ``Cluster.status()`` with ``connected: true``, from the project's own app."""
    answer = make_project(broker, queue_name).request("status/")
    assert answer["status"] == 200
    project_status = answer["json"]
    assert project_status["connected"] is True
    assert list(project_status["workers"]) == [worker.hostname]
    assert project_status["totals"]["concurrency"] == 2
    assert set(project_status["queues"]) == {queue_name, f"{queue_name}-slow"}


@broker_test
def test_tasks_and_stats_views_list_running_and_scheduled_tasks(
        make_project: Callable[..., DjangoProject], broker: str, client: Celery,
        queue_name: str, worker: WorkerProcess) -> None:
    """A running and a scheduled task, listed as the seed lists them and counted by name."""
    running = client.send_task("tests.workerapp.sleep", (30,), queue=queue_name)
    scheduled = client.send_task("tests.workerapp.add", (1, 2), queue=queue_name, countdown=300)
    try:
        project = make_project(broker, queue_name)
        listing = wait_until(
            lambda: (body := project.request("tasks/")["json"])["running_count"] == 1
            and body["scheduled"] and body, 30, "a running and a scheduled task")
        assert listing["running"] == [{"worker": worker.hostname, "task_id": running.id,
                                       "task_name": "tests.workerapp.sleep",
                                       "time_start": listing["running"][0]["time_start"]}]
        assert isinstance(listing["running"][0]["time_start"], float)
        assert [(t["task_id"], t["task_name"], t["worker"]) for t in listing["scheduled"]] == [
            (scheduled.id, "tests.workerapp.add", worker.hostname)]
        assert listing["scheduled"][0]["eta"]
        stats = project.request("stats/")["json"]
        assert stats == {"total_running": 1, "total_scheduled": 1, "by_task_name": {
            "tests.workerapp.add": {"running": 0, "scheduled": 1},
            "tests.workerapp.sleep": {"running": 1, "scheduled": 0}}}
    finally:
        client.control.revoke([running.id, scheduled.id], terminate=True)


@broker_test
def test_history_view_searches_finished_tasks(
        make_project: Callable[..., DjangoProject], broker: str, client: Celery,
        queue_name: str, worker: WorkerProcess) -> None:
    """``?task=`` and ``?state=`` reach the workers' search; ``?limit=`` caps the answer."""
    added = [client.send_task("tests.workerapp.add", (n, 1), queue=queue_name) for n in range(3)]
    failed = client.send_task("tests.workerapp.boom", queue=queue_name)
    project = make_project(broker, queue_name)
    wait_until(lambda: len(project.request("history/")["json"]["tasks"]) == 4, 30,
               "4 finished tasks")
    successes = project.request("history/?task=tests.workerapp.add&state=success")["json"]
    assert sorted(t["id"] for t in successes["tasks"]) == sorted(r.id for r in added)
    failures = project.request("history/?state=failure")["json"]["tasks"]
    assert [(t["id"], t["error_type"], t["worker"]) for t in failures] == [
        (failed.id, "ValueError", worker.hostname)]
    assert len(project.request("history/?limit=2")["json"]["tasks"]) == 2


@broker_test
def test_revoke_with_the_token_terminates_a_running_task(
        make_project: Callable[..., DjangoProject], broker: str, client: Celery,
        queue_name: str, worker: WorkerProcess) -> None:
    """202 with the bearer token and no CSRF token; the worker then ends the task revoked."""
    running = client.send_task("tests.workerapp.sleep", (60,), queue=queue_name)
    project = make_project(broker, queue_name, TOKEN)
    wait_until(lambda: project.request("tasks/")["json"]["running_count"] == 1, 30,
               "the task to run")
    answer = project.request(f"tasks/{running.id}/revoke/?terminate=true", method="POST",
                             Authorization=f"Bearer {TOKEN}")
    assert (answer["status"], answer["json"]) == (
        202, {"task_id": running.id, "revoked": True, "terminate": True})
    ended = wait_until(lambda: project.request("history/?state=revoked")["json"]["tasks"], 30,
                       "the task to end revoked")
    assert [t["id"] for t in ended] == [running.id]
