"""TCP ports: a free one to give, whether one answers, and which ones a process listens on."""

from __future__ import annotations

import socket

import psutil


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port`` now."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` itself listens on, read from the OS.

    Raises ``psutil.NoSuchProcess`` when the process is gone.
    """
    process = psutil.Process(pid)
    # net_connections() since psutil 6; connections() before (and deprecated since).
    read = getattr(process, "net_connections", None) or process.connections
    return {connection.laddr.port for connection in read(kind="tcp")
            if connection.status == psutil.CONN_LISTEN and connection.laddr}
