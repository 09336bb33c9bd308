"""A TCP proxy a test can cut, to take a shared broker away from one worker only.

The shared RabbitMQ must stay up for every other test, so a test that needs an outage
points its worker at the proxy and calls :meth:`TCPProxy.cut`: every live connection
is reset and new ones are reset as soon as they are accepted, as by a firewall that
rejects, until :meth:`TCPProxy.restore`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable

# SO_LINGER on, 0 s: close() sends RST instead of FIN, as a cut connection would show.
_RESET = struct.pack("ii", 1, 0)


def _reset(sock: socket.socket) -> None:
    """Wake any thread blocked reading ``sock``, then close it with an RST; silent."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # on Linux this wakes recv() in the pump thread
    with contextlib.suppress(OSError):
        sock.close()


class TCPProxy:
    """Forwards 127.0.0.1:``port`` to ``target``, one pair of pump threads a connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._cut = False
        self._stopped = threading.Event()
        self.accepted = 0  # connections forwarded, for the test's figures

    def url(self, scheme: str = "amqp", credentials: str = "guest:guest",
            vhost: str = "/") -> str:
        return f"{scheme}://{credentials}@127.0.0.1:{self.port}/{vhost}"

    def __enter__(self) -> TCPProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        self._spawn(self._accept, "proxy-accept")

    def cut(self) -> None:
        """Reset every live connection and every new one until :meth:`restore`."""
        with self._lock:
            self._cut = True
            live, self._live = self._live, set()
        for sock in live:
            _reset(sock)

    def restore(self) -> None:
        """Forward new connections again (the ones cut stay cut, as after a real outage)."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        """Stop accepting, reset everything and join the threads; idempotent."""
        self._stopped.set()
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            if self._cut:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._cut:  # cut while we connected upstream
                    _reset(client)
                    _reset(upstream)
                    continue
                self._live.update((client, upstream))
                self.accepted += 1
            self._spawn(self._pump, "proxy-up", client, upstream)
            self._spawn(self._pump, "proxy-down", upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._live.discard(source)
                self._live.discard(sink)
            _reset(source)
            _reset(sink)
