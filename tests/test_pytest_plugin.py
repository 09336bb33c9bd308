"""The pytest plugin: its fixtures used here directly, and in user-like runs via pytester."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from celery import Celery

from celery_observe.cluster.client import Cluster
from celery_observe.testing import InProcessWorker, MetricsReader
from celery_observe.testing.settings import ObserveSettings, ObserveSettingsError
from celery_observe.testing.subprocess_worker import SubprocessWorker

from .conftest import broker_url
from .workers import REPO

pytest_plugins = ["pytester"]
# Finalizing an app adds every shared task defined so far in the process; a test elsewhere
# defines one with the deprecated `queue` attribute, whose warning is not this test's.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(?s).*'queue' task attribute:celery.exceptions.CDeprecationWarning")

app = Celery("plugin-tests", set_as_current=False)


@app.task(name="plugin.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="plugin.boom")
def boom() -> None:
    raise ValueError("boom")


@app.task(name="plugin.nap")
def nap(seconds: float) -> None:
    time.sleep(seconds)


@pytest.fixture
def observe_app() -> Celery:
    """This file's app, for the plugin's fixtures."""
    return app


# --- the fixtures, used by this project's own tests -----------------------------------------

def test_counts_successes_and_failures(observe_worker: InProcessWorker,
                                       observe_metrics: MetricsReader) -> None:
    """Three successes and a failure are counted exactly; no internal fault."""
    assert [add.delay(1, n).get(timeout=10) for n in range(3)] == [1, 2, 3]
    boom.delay()
    observe_metrics.assert_task_counts("plugin.add", success=3, failure=0)
    observe_metrics.assert_task_counts("plugin.boom", success=0, failure=1)
    assert observe_metrics.value("celery_task_errors_total", task_name="plugin.boom",
                                 error_type="ValueError") == 1
    observe_metrics.assert_no_internal_faults()


def test_a_count_not_reached_says_what_was_counted(observe_worker: InProcessWorker,
                                                   observe_metrics: MetricsReader) -> None:
    """A count short of the expected one fails after the wait, naming both."""
    add.delay(1, 1).get(timeout=10)
    with pytest.raises(AssertionError) as failure:
        observe_metrics.assert_task_counts("plugin.add", success=2, failure=0, timeout=0.3)
    assert str(failure.value) == (
        "celery_task_total of 'plugin.add' on observe-worker@localhost: expected success=2 "
        "failure=0, counted success=1 failure=0 after waiting 0.3 s")


def test_a_count_past_the_expected_one_fails_at_once(observe_worker: InProcessWorker,
                                                     observe_metrics: MetricsReader) -> None:
    """Counters never go down: a count already over the expected one fails without waiting."""
    for n in range(2):
        add.delay(n, n).get(timeout=10)
    observe_metrics.assert_task_counts("plugin.add", success=2)
    started = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        observe_metrics.assert_task_counts("plugin.add", success=1, timeout=30)
    assert time.monotonic() - started < 5
    assert str(failure.value) == ("celery_task_total of 'plugin.add' on "
                                  "observe-worker@localhost: expected success=1, counted "
                                  "success=2")


def test_an_unknown_status_is_refused(observe_worker: InProcessWorker,
                                      observe_metrics: MetricsReader) -> None:
    """assert_task_counts names the statuses it counts when given another."""
    with pytest.raises(TypeError) as error:
        observe_metrics.assert_task_counts("plugin.add", succeeded=1)
    assert str(error.value) == ("assert_task_counts() counts success, failure, retry, revoked, "
                                "rejected; not succeeded")


def test_durations_are_checked_against_each_run(observe_worker: InProcessWorker,
                                                observe_metrics: MetricsReader) -> None:
    """A 0.2 s run passes a 5 s bound and fails a 0.1 s one, with the time it took."""
    nap.delay(0.2).get(timeout=10)
    observe_metrics.assert_duration_under("plugin.nap", 5.0)
    with pytest.raises(AssertionError, match=r"^the slowest of 1 runs of 'plugin.nap' on "
                       r"observe-worker@localhost took 0\.2\d\d s, not under 0\.1 s$"):
        observe_metrics.assert_duration_under("plugin.nap", 0.1)


def test_the_cluster_client_sees_the_test_worker(observe_worker: InProcessWorker,
                                                 observe_cluster: Cluster) -> None:
    """observe_cluster answers for exactly the test's worker."""
    add.delay(2, 2).get(timeout=10)
    status = observe_cluster.status()
    assert sorted(status["workers"]) == ["observe-worker@localhost"]
    assert status["workers_online"] == 1


@pytest.mark.observe(pool="threads", concurrency=3)
def test_the_marker_sets_pool_and_concurrency(observe_worker: InProcessWorker,
                                              observe_metrics: MetricsReader) -> None:
    """@pytest.mark.observe(pool="threads", concurrency=3) runs that worker in-process."""
    assert observe_metrics.value("celery_worker_info", worker_name="observe-worker@localhost",
                                 celery_version=__import__("celery").__version__,
                                 pool="threads", concurrency="3") == 1
    assert isinstance(observe_worker, InProcessWorker)


class TestPrefork:
    """A subprocess worker imports the app, so it is one from a module of its own."""

    @pytest.fixture
    def observe_app(self) -> Celery:
        """tests/workerapp.py's app, which the subprocess worker imports."""
        from . import workerapp
        return workerapp.app

    @pytest.mark.observe(pool="prefork", concurrency=2)
    def test_prefork_runs_as_a_subprocess_worker(self, observe_app: Celery,
                                                 observe_worker: SubprocessWorker,
                                                 observe_metrics: MetricsReader) -> None:
        """A prefork worker is a `celery worker` subprocess on a private filesystem broker."""
        add, boom = (observe_app.tasks[f"tests.workerapp.{name}"] for name in ("add", "boom"))
        assert [add.delay(3, n).get(timeout=10, interval=0.05) for n in range(2)] == [3, 4]
        boom.delay()
        observe_metrics.assert_task_counts("tests.workerapp.add", success=2, failure=0)
        observe_metrics.assert_task_counts("tests.workerapp.boom", failure=1)
        assert observe_metrics.value("celery_worker_pool_size",
                                     worker_name="observe-worker@localhost") == 2
        assert isinstance(observe_worker, SubprocessWorker)
        assert observe_worker.app == "celery_observe.testing.subprocess_app"
        observe_metrics.assert_no_internal_faults()


def test_marker_keywords_are_checked() -> None:
    """An unknown marker keyword or pool is refused with the ones it takes."""
    with pytest.raises(ObserveSettingsError) as unknown:
        ObserveSettings().with_marker({"pools": "threads"})
    assert str(unknown.value) == ("@pytest.mark.observe() takes backend, broker, concurrency, "
                                  "pool, queues, timeout; not pools")
    with pytest.raises(ObserveSettingsError, match=r"^observe pool 'gevent' is not one of "
                       r"solo, threads, prefork \(solo and threads run in the test process, "
                       r"prefork as a `celery worker` subprocess\)$"):
        ObserveSettings().with_marker({"pool": "gevent"})


# --- user-like runs ---------------------------------------------------------------------------

#: The plugin as `-p` loads it, for runs with entry-point autoloading off (faster: the venv
#: also holds hypothesis' and schemathesis' plugins).
PLUGIN = ("-p", "celery_observe.testing.pytest_plugin")

#: For runs that autoload entry points (to prove that ours and pytest-celery's load): the
#: other test tools in this venv stay out (hypothesis alone takes 1.3 s to import).
OTHER_PLUGINS_OFF = ("-p", "no:hypothesispytest", "-p", "no:schemathesis", "-p", "no:anyio",
                     "-p", "no:cacheprovider")

USER_APP = '''
import pytest
from celery import Celery

app = Celery("proj")


@app.task(name="proj.add")
def add(x, y):
    return x + y


@pytest.fixture
def observe_app():
    return app
'''

WORKER_MODULES = ("prometheus_client", "psutil", "celery_observe.worker", "celery.worker",
                  "celery.contrib.testing", "celery.contrib.pytest")


def loaded_after(statement: str) -> list[str]:
    """The worker machinery a fresh interpreter has loaded after ``statement``."""
    code = (f"import json, sys; {statement}; "
            f"print(json.dumps(sorted(m for m in {WORKER_MODULES!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=REPO, check=True)
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def run_alone(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
              *args: str) -> pytest.RunResult:
    """A pytest run in a subprocess with our plugin and pytest's own only."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return pytester.runpytest_subprocess(*PLUGIN, "-p", "no:cacheprovider", *args)


def test_importing_the_plugin_loads_no_worker_machinery() -> None:
    """What pytest imports at start-up loads no Celery worker, Prometheus client or psutil."""
    assert loaded_after("import celery_observe.testing.pytest_plugin") == []


def test_a_run_that_uses_no_fixture_loads_none(pytester: pytest.Pytester) -> None:
    """With the plugin registered, a test using no observe_* fixture finds none of it loaded."""
    pytester.makepyfile(test_plain=f'''
import sys

def test_nothing_loaded(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("celery_observe")
    assert [m for m in {WORKER_MODULES!r} if m in sys.modules] == []
''')
    result = pytester.runpytest_subprocess("-p", "no:celery", *OTHER_PLUGINS_OFF)
    result.assert_outcomes(passed=1)


def test_a_failing_assertion_reads_as_the_test_line_and_the_counts(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's failed count shows their line and the message, none of the plugin's frames."""
    pytester.makeconftest(USER_APP)
    pytester.makepyfile(test_counts='''
from conftest import add

def test_two_adds(observe_worker, observe_metrics):
    add.delay(1, 2).get(timeout=10)
    observe_metrics.assert_task_counts("proj.add", success=2, timeout=0.2)
''')
    result = run_alone(pytester, monkeypatch)
    result.assert_outcomes(failed=1)
    errors = [line for line in result.outlines if line.startswith("E ")]
    assert errors == ["E       AssertionError: celery_task_total of 'proj.add' on "
                      "observe-worker@localhost: expected success=2, counted success=1 after "
                      "waiting 0.2 s"]
    assert "reader.py" not in result.stdout.str()
    result.stdout.fnmatch_lines(['>       observe_metrics.assert_task_counts("proj.add", '
                                 'success=2, timeout=0.2)'])


def test_fixtures_list_their_one_line_help(pytester: pytest.Pytester,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`pytest --fixtures` shows each observe_* fixture with its help line."""
    result = run_alone(pytester, monkeypatch, "--fixtures")
    assert result.ret == 0
    out = result.stdout.str()
    helps = {name: re.search(rf"^{name} -- .*\n    (.+)$", out, re.M) for name in (
        "observe_config", "observe_app", "observe_worker", "observe_metrics", "observe_cluster")}
    assert {name: match.group(1) if match else None for name, match in helps.items()} == {
        "observe_config": "The observed test worker's settings: observe marker, then "
                          "--observe-* options, ini.",
        "observe_app": "Your Celery app: override this fixture, or set observe_app = "
                       "proj.celery:app (ini).",
        "observe_worker": "An observed worker of observe_app for this test (.hostname, .port, "
                          ".metrics_url).",
        "observe_metrics": "observe_worker's metrics: assert_task_counts, "
                           "assert_duration_under, no faults.",
        "observe_cluster": "A celery_observe.Cluster of observe_app that has found this "
                           "test's worker.",
    }


USER_TEST = '''
from conftest import add

def test_observed(observe_worker, observe_metrics):
    assert add.delay(2, 3).get(timeout=10) == 5
    observe_metrics.assert_task_counts("proj.add", success=1, failure=0)
'''


def test_beside_celery_contrib_pytest(pytester: pytest.Pytester,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With celery's own plugin loaded, its celery_worker and our observe_worker both run."""
    pytester.makeconftest(USER_APP)
    pytester.makepyfile(test_observed=USER_TEST, test_celery_own='''
def test_celery_own(celery_app, celery_worker):
    @celery_app.task(name="own.mul")
    def mul(x, y):
        return x * y

    celery_worker.reload()
    assert mul.delay(4, 4).get(timeout=10) == 16
''')
    result = run_alone(pytester, monkeypatch, "-p", "celery.contrib.pytest")
    result.assert_outcomes(passed=2)


def test_beside_pytest_celery(pytester: pytest.Pytester) -> None:
    """pytest-celery's plugin autoloads without Docker; our fixtures run beside its own."""
    pytester.makeconftest(USER_APP)
    pytester.makepyfile(test_observed=USER_TEST, test_plugins='''
def test_both_loaded(pytestconfig):
    manager = pytestconfig.pluginmanager
    assert manager.has_plugin("celery") and manager.has_plugin("celery_observe")
    assert manager.get_plugin("celery").__name__ == "pytest_celery.plugin"
''')
    result = pytester.runpytest_subprocess(*OTHER_PLUGINS_OFF)
    result.assert_outcomes(passed=2)
    listed = pytester.runpytest_subprocess(*OTHER_PLUGINS_OFF, "--fixtures")
    for fixture in (r"^celery_worker -- .*pytest_celery/fixtures/worker\.py",
                    r"^observe_worker -- .*celery_observe/testing/pytest_plugin\.py"):
        listed.stdout.re_match_lines([fixture])


def test_the_observed_docker_worker_of_pytest_celery() -> None:
    """ObservedWorkerContainer runs pytest-celery's worker command with --observe, port out."""
    from celery_observe.testing.containers import ObservedWorkerContainer

    assert ObservedWorkerContainer.command()[-5:] == [
        "--observe", "--observe-address", "0.0.0.0", "--observe-port", "9540"]
    assert ObservedWorkerContainer.command()[:4] == ["celery", "-A", "app", "worker"]
    assert ObservedWorkerContainer.ports() == {"9540/tcp": None}


def test_each_test_gets_the_app_back_and_no_leftover_message(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a test, the app has its settings back and its queues hold none of its tasks."""
    pytester.makeconftest(USER_APP + '''
app.conf.task_routes = {"proj.report": {"queue": "nobody"}}


@app.task(name="proj.report")
def report():
    return "done"
''')
    pytester.makepyfile(test_order='''
import pytest
from conftest import app, report

def test_1_leaves_a_message_in_a_queue_nobody_consumes(observe_worker):
    report.delay()

def test_2_the_app_has_its_own_settings_back():
    assert app.conf.broker_url is None
    assert app.conf.control_exchange == "celery"

@pytest.mark.observe(queues=["nobody"])
def test_3_a_worker_of_that_queue_gets_nothing(observe_worker, observe_metrics):
    assert report.delay().get(timeout=10) == "done"
    observe_metrics.assert_task_counts("proj.report", success=1)
''')
    result = run_alone(pytester, monkeypatch, "-p", "no:randomly")
    result.assert_outcomes(passed=3)


@pytest.mark.broker
def test_on_a_broker_of_your_own(pytester: pytest.Pytester,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """--observe-broker puts the test worker and its client on that broker (Redis here)."""
    url = broker_url("redis", db=13)
    pytester.makeconftest(USER_APP)
    pytester.makepyfile(test_observed=USER_TEST + '''

def test_the_cluster_reports_the_broker(observe_worker, observe_cluster):
    assert observe_cluster.status()["broker"] == "redis://127.0.0.1:6379/13"
''')
    result = run_alone(pytester, monkeypatch, f"--observe-broker={url}")
    result.assert_outcomes(passed=2)


def readme_test_file() -> str:
    """The complete test file README's "Testing your tasks" section shows."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Testing your tasks with celery-observe\n", 1)[1].split("\n## ")[0]
    block = section.split("```python\n", 1)[1].split("```\n", 1)[0]
    assert block.startswith("# test_tasks.py")
    return block


def test_the_readme_test_file_passes(pytester: pytest.Pytester,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """README's test file, as a user would copy it, passes: three tests."""
    pytester.makepyfile(test_tasks=readme_test_file())
    result = run_alone(pytester, monkeypatch)
    result.assert_outcomes(passed=3)
