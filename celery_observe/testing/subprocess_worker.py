"""An observed prefork test worker: the test's app in a ``celery worker`` subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import types
from typing import TYPE_CHECKING, Any

from .inprocess import HOSTNAME, wake_loop
from .processes import signal_once
from .settings import APP_ENV, CONF_ENV
from .waits import WaitTimeoutError, wait_until
from .workers import ObservedWorker

if TYPE_CHECKING:
    from celery import Celery


#: What Celery prints when a worker's signal handler has asked it to stop.
SHUTDOWN = "Warm shutdown"
#: Packages whose modules refer to an app without being where it can be imported from.
NOT_HOMES = frozenset({"celery", "kombu", "celery_observe", "_pytest", "pytest"})


class SubprocessWorker(ObservedWorker):
    """``celery worker --observe`` of the test's app, configured as the test process is."""

    def __init__(self, app: Celery, app_path: str, conf: dict[str, Any], queues: list[str],
                 *, pool: str, concurrency: int) -> None:
        env = {APP_ENV: app_path, CONF_ENV: json.dumps(conf),
               # What the test process can import (conftest folders, src layouts), the
               # worker can too.
               "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        super().__init__("celery_observe.testing.subprocess_app", conf["broker_url"],
                         ",".join(queues), pool=pool, concurrency=concurrency, env=env,
                         hostname=HOSTNAME, broker_env="CELERY_BROKER_URL",
                         log_prefix="observe-pytest-worker-")
        self.test_app, self.pool, self.concurrency = app, pool, concurrency

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop as :class:`ObservedWorker` does, waking the worker's loop once it has seen
        the signal (its warm shutdown then takes about 1 s instead of about 7)."""
        process = self.process
        if process is not None and process.poll() is None and sig == signal.SIGTERM:
            signal_once(process, sig)
            with contextlib.suppress(WaitTimeoutError):
                wait_until(lambda: process.poll() is not None or SHUTDOWN in self.log(),
                           5, "the worker to begin its warm shutdown")
                wake_loop(self.test_app, self.hostname)
        return super().stop(sig, timeout)


def import_path(app: Celery) -> str | None:
    """Where ``app`` can be imported from (``module:name``): the first loaded module that
    holds it under a public name. Celery's own modules are left aside (the current app
    is in ``celery._state``, which a new process does not share), and so are test modules,
    conftest files and ``__main__``."""
    for module_name, module in list(sys.modules.items()):
        last = module_name.rpartition(".")[2]
        if (not isinstance(module, types.ModuleType) or module_name == "__main__"
                or module_name.partition(".")[0] in NOT_HOMES
                or last == "conftest" or last.startswith("test_")):
            continue
        for name, value in list(vars(module).items()):
            if value is app and not name.startswith("_"):
                return f"{module_name}:{name}"
    return None
