"""A bad setting stops the worker with a usage error naming it; a bad address is logged."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from celery import Celery

from celery_observe.config import SETTINGS
from celery_observe.testing import wait_until

from ..workers import REPO, WorkerProcess

BAD_VALUES = {
    "enabled": "maybe", "port": "http", "address": " ", "advertise_address": "0.0.0.0",
    "buckets": "10,1",
    "liveness_timeout": "0", "history_size": "0", "resource_interval": "-1",
    "max_task_names": "many", "task_names_allow": "proj.a b", "task_names_deny": "x y",
    "show_task_args": "perhaps",
}


def test_every_setting_has_a_bad_value_here() -> None:
    """The table below covers each setting, so a new one cannot go untested."""
    assert sorted(BAD_VALUES) == sorted(setting.field for setting in SETTINGS)


def test_a_bad_value_of_any_setting_is_a_usage_error_naming_it() -> None:
    """Each CELERY_OBSERVE_* variable with a bad value: exit 2, the variable, the value and
    what is expected on stderr, and no traceback."""
    workers = {}
    for setting in SETTINGS:
        env = {**os.environ, setting.env_var: BAD_VALUES[setting.field],
               "CELERY_OBSERVE_TEST_BROKER": "memory://"}
        enable = [] if setting.field == "enabled" else ["--observe"]  # the flag would win
        workers[setting] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.workerapp", "worker", *enable,
             "-P", "solo"], cwd=REPO, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
    try:
        for setting, process in workers.items():
            _, stderr = process.communicate(timeout=60)
            assert process.returncode == 2, (setting.env_var, stderr)
            expected = (f"Error: celery-observe: environment variable {setting.env_var} has "
                        f"the value {BAD_VALUES[setting.field]!r}, which is not valid: expected")
            assert expected in stderr, stderr
            assert "Traceback" not in stderr
    finally:
        for process in workers.values():
            process.kill()
            process.communicate()


def test_a_bad_value_in_app_conf_names_the_conf_key() -> None:
    """A worker started from code with a bad app.conf value stops naming app.conf's key."""
    code = ("import celery_observe; from tests.workerapp import app; "
            "app.conf.observe_port = 70000; celery_observe.install(app); "
            "app.worker_main(['worker', '-P', 'solo'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "CELERY_OBSERVE_TEST_BROKER": "memory://"})
    assert result.returncode == 1
    assert ("app.conf.observe_port has the value 70000, which is not valid: expected a whole "
            "number from 0 to 65535") in result.stderr


@pytest.mark.broker
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_an_address_not_on_this_host_is_logged_and_the_worker_runs(
        broker: str, client: Celery, queue_name: str) -> None:
    """--observe-address of another host: the log names the option; tasks still run."""
    worker = WorkerProcess(broker, queue_name, pool="solo",
                           extra_args=("--observe-address", "192.0.2.1"))
    worker.start(serving=False)
    try:
        client.send_task("tests.workerapp.add", (1, 2), queue=queue_name)
        wait_until(lambda: worker.count_in_log("succeeded in"), 20, "the task to run")
    finally:
        worker.stop()
    assert "cannot listen on 192.0.2.1:0" in worker.log()
    assert "Give an address of this host with --observe-address" in worker.log()
