"""Broker servers a test owns: a private redis-server to kill, restart or lock."""

from __future__ import annotations

import socket
import subprocess
import tempfile

from .workers import wait_until


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None
