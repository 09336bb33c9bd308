"""Broker servers a test owns: private redis-servers and RabbitMQ nodes to kill or lock."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from pathlib import Path

from celery_observe.testing import free_port, listening, wait_until


class PrivateRedis:
    """A redis-server of the test's own on a free port.

    With ``persistent`` it writes every command to an append-only file before answering,
    so messages queued before a kill are there again after :meth:`start`.
    """

    def __init__(self, password: str | None = None, persistent: bool = False) -> None:
        self.port = free_port()
        self.password = password
        self.directory = tempfile.mkdtemp(prefix="observe-redis-")
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        secret = f":{self.password}@" if self.password else ""
        return f"redis://{secret}127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.directory, "--save", ""]
        args += (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                 else ["--appendonly", "no"])
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_until(self.answers, 10, "redis-server to listen")

    def answers(self) -> bool:
        return listening("127.0.0.1", self.port)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


#: The node itself on Debian/Ubuntu. The ``rabbitmq-server`` on PATH there is a wrapper
#: that switches to the ``rabbitmq`` user and its home, which a private node must avoid.
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


class PrivateRabbitMQ:
    """A RabbitMQ node of the test's own: own node name, ports, database and logs.

    It reads none of the system's configuration (that one binds 5672 and names the node
    ``rabbit@localhost``). Its database is kept across :meth:`kill` and :meth:`start`, so
    persistent messages in durable queues the node confirmed are there after a restart.
    Starting takes ~5 s on the machines of these tests.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.directory = tempfile.mkdtemp(prefix="observe-rabbitmq-")
        self.nodename = f"observe-{self.port}@localhost"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self, timeout: float = 60) -> None:
        base = Path(self.directory)
        env = {
            **os.environ,
            "HOME": self.directory,  # the Erlang cookie goes here, not in the user's home
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "pid"),
            # Files that do not exist: no system config, env file or plugins.
            "RABBITMQ_CONFIG_FILE": str(base / "none"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "none.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "none.env"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_ENABLED_PLUGINS": "",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        with (base / "node.log").open("ab") as log:
            self.process = subprocess.Popen([RABBITMQ_SERVER], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self.answers, timeout, "rabbitmq-server to listen")

    def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (Path(self.directory) / "node.log").read_text(errors="replace")
            raise AssertionError(f"rabbitmq-server exited with {self.process.returncode}:\n"
                                 f"{log[-3000:]}")
        return listening("127.0.0.1", self.port)

    def kill(self) -> None:
        """SIGKILL the node and everything it started (its own session)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None
