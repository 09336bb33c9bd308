"""The HTTP server inside each observed worker: small, bounded, read-only.

Routes are plain functions from request headers to a :class:`Response`, so the server
knows nothing of Celery. Every connection is answered once and closed (no keep-alive), its
socket has a read timeout, and at most ``max_connections`` are served at once; a
connection beyond that is closed at once, so no client can pin threads or memory.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .faults import FaultLog

logger = logging.getLogger("celery_observe.http")


@dataclass(frozen=True)
class Response:
    """What a route answers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload, default=str, sort_keys=True).encode() + b"\n")


Route = Callable[[Mapping[str, str]], Response]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5.0  # seconds a client may take to send its request
    server_version = "celery-observe"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # any other method, known or not
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._send(Response(405, b'{"error": "method not allowed"}\n',
                            headers=(("Allow", "GET, HEAD"),)), send_body=True)

    def _answer(self, send_body: bool) -> None:
        path = urlsplit(self.path).path
        route = self.server.routes.get(path)
        if route is None:
            known = sorted(self.server.routes)
            self._send(json_response(404, {"error": "not found", "paths": known}), send_body)
            return
        try:
            response = route({key.lower(): value for key, value in self.headers.items()})
        except Exception as exc:  # noqa: BLE001
            self.server.faults.report(f"http {path}", exc)
            response = json_response(500, {"error": "internal error, see the worker log"})
        self._send(response, send_body)

    def _send(self, response: Response, send_body: bool) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("%s - " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], routes: Mapping[str, Route], faults: FaultLog,
                 max_connections: int) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.routes = dict(routes)
        self.faults = faults
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: refuse rather than queue
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


def _close_in_child(server_ref: weakref.ref[_Server]) -> None:
    server = server_ref()
    if server is not None:
        server.socket.close()  # the child's copy only; the parent keeps listening


class ObserveHTTPServer:
    """Serves ``routes`` on a daemon thread until :meth:`stop`."""

    def __init__(self, address: str, port: int, routes: Mapping[str, Route], faults: FaultLog,
                 max_connections: int = 32) -> None:
        self._server = _Server((address, port), routes, faults, max_connections)
        # Pool children forked later (e.g. --max-tasks-per-child) must not hold the port.
        os.register_at_fork(after_in_child=functools.partial(_close_in_child,
                                                             weakref.ref(self._server)))
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def bound_port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name="celery-observe-http", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice and from signal handlers."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            self._server.shutdown()
            thread.join(timeout=2.0)
        self._server.server_close()
