"""The HTTP server inside each observed worker: small, read-only, bounded in time and size.

Routes are plain functions from request headers to a :class:`Response`, so the server knows
nothing of Celery. One I/O thread runs a ``selectors`` loop that accepts, reads request heads,
writes answers and closes, all without blocking: a client that is silent, slow, or sends junk
holds a few KiB and a slot until its deadline, never a thread. Cheap routes (the probes) run on
that thread; the others (``/metrics``) on a small fixed pool, so a probe never waits behind a
render. Every connection is answered once and closed (no keep-alive: a probe or a scrape is one
request). A request body is never parsed: what follows the head is drained and dropped after
the answer, only so that closing does not reset the connection before the client reads it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import queue
import selectors
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Collection, Mapping

from ..faults import FaultLog
from .http_messages import (
    HEAD_END,
    METHOD_PREFIX,
    REQUEST_LINE,
    Limits,
    Request,
    Response,
    Route,
    error_response,
    json_response,
    parse_head,
    serialize,
)

__all__ = ["Limits", "ObserveHTTPServer", "Response", "Route", "json_response"]

LISTEN_BACKLOG = 1024      # kernel accept queue: a burst of connects is not dropped (a 1 s retry)
ACCEPT_BATCH = 64          # accepts per loop turn, so reads of accepted clients are not starved
SWEEP_SECONDS = 0.1        # deadlines are checked this often (their resolution)
STOP_SECONDS = 2.0         # stop() waits at most this long for all threads together

READ, RENDER, WRITE, LINGER = "read", "render", "write", "linger"


class _Conn:
    """One client connection and the phase it is in; only the I/O thread touches it."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.phase = READ
        self.deadline = deadline
        self.inbuf = bytearray()
        self.out: list[memoryview] = []
        self.drained = 0
        self.events = 0  # what the selector watches for it (0: not registered)
        self.closed = False


def _close_in_child(server_ref: weakref.ref[ObserveHTTPServer]) -> None:
    server = server_ref()
    if server is not None:
        server._close_in_child()


class ObserveHTTPServer:
    """Serves ``routes`` from :meth:`start` until :meth:`stop`; binds in the constructor.

    Routes in ``inline_paths`` must be quick and non-blocking: they run on the I/O thread.
    """

    def __init__(self, address: str, port: int, routes: Mapping[str, Route], faults: FaultLog,
                 inline_paths: Collection[str] = (), limits: Limits | None = None) -> None:
        self._routes = dict(routes)
        self._inline = frozenset(inline_paths)
        self._faults = faults
        self._limits = limits or Limits()
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((address, port))
            self._listener.listen(LISTEN_BACKLOG)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: dict[int, _Conn] = {}  # by fd, in accept order (the oldest first)
        self._jobs: queue.SimpleQueue[tuple[_Conn, Request, Route] | None] = queue.SimpleQueue()
        self._done: deque[tuple[_Conn, tuple[bytes, ...] | None]] = deque()
        self._rendering = 0  # pooled requests queued or running
        self._paused = False  # not accepting: out of file descriptors
        self._next_sweep = 0.0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stop_once = threading.Lock()  # acquired once, never released: stop() runs once
        # Pool children forked later (e.g. --max-tasks-per-child) must not hold the port or,
        # by keeping a copy of a client socket open, delay its close.
        os.register_at_fork(after_in_child=functools.partial(_close_in_child, weakref.ref(self)))

    @property
    def bound_port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def start(self) -> None:
        """Start the I/O thread and the render threads; no thread is added or lost later."""
        self._threads = [threading.Thread(target=self._serve, name="celery-observe-http",
                                          daemon=True)]
        self._threads += [threading.Thread(target=self._render_forever, daemon=True,
                                           name=f"celery-observe-render-{n}")
                          for n in range(self._limits.render_threads)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Stop serving, release the port, join the threads within ``timeout`` together;
        idempotent, signal-handler safe."""
        if not self._stop_once.acquire(blocking=False):
            return
        self._stopping.set()
        self._wake()
        for _ in self._threads[1:]:
            self._jobs.put(None)  # SimpleQueue.put is reentrant: fine in a signal handler
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._listener.close()
        if not self._threads:  # never started: the loop did not close these
            self._close_all()

    # --- the I/O thread -------------------------------------------------------------------

    def _serve(self) -> None:
        """The I/O loop: never dies; a fault closes the one connection it happened on."""
        try:
            while not self._stopping.is_set():
                try:
                    self._turn()
                except Exception as exc:  # noqa: BLE001
                    self._faults.report("http server", exc)
                    self._stopping.wait(SWEEP_SECONDS)  # a fault of the loop must not spin
        finally:
            self._close_all()

    def _turn(self) -> None:
        timeout = SWEEP_SECONDS if self._conns or self._paused else None
        for key, _mask in self._selector.select(timeout):
            if key.data == "listener":
                self._accept()
            elif key.data == "wake":
                self._drain_wake()
            else:
                self._guarded(key.data, self._on_ready)
        while self._done:
            conn, answer = self._done.popleft()
            self._rendering -= 1
            if answer is not None and conn.phase == RENDER and not conn.closed:
                self._guarded(conn, functools.partial(self._answer_bytes, answer=answer))
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_SECONDS
            for conn in [c for c in self._conns.values() if c.deadline <= now]:
                self._guarded(conn, self._expire)
            if self._paused:
                self._paused = False
                self._selector.register(self._listener, selectors.EVENT_READ, "listener")

    def _guarded(self, conn: _Conn, step: Callable[[_Conn], None]) -> None:
        try:
            step(conn)
        except Exception as exc:  # noqa: BLE001
            self._faults.report("http server", exc)
            self._close(conn)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                if not self._make_room():  # out of descriptors: wait for one to free
                    self._selector.unregister(self._listener)
                    self._paused = True
                    return
                continue
            sock.setblocking(False)
            if len(self._conns) >= self._limits.max_connections and not self._make_room():
                sock.close()  # every slot is busy answering: refuse rather than queue
                continue
            conn = _Conn(sock, time.monotonic() + self._limits.head_seconds)
            self._conns[sock.fileno()] = conn
            self._guarded(conn, self._read)  # the request is often there already

    def _make_room(self) -> bool:
        """Close the oldest connection waiting on its client, if any: one sending its head or
        lingering, else one reading its answer too slowly. Renders in flight are kept, and
        they are fewer than the slots, so a new client (a probe) always gets one."""
        for phases in ((READ, LINGER), (WRITE,)):
            for conn in self._conns.values():
                if conn.phase in phases:
                    self._close(conn)
                    return True
        return False

    def _on_ready(self, conn: _Conn) -> None:
        if not conn.closed:  # else closed earlier in this turn (evicted, say)
            {READ: self._read, WRITE: self._write, LINGER: self._linger}[conn.phase](conn)

    def _read(self, conn: _Conn) -> None:
        """Take what the client sent so far and answer once the head is complete or bad."""
        limits = self._limits
        try:
            chunk = conn.sock.recv(limits.max_head_bytes + 1 - len(conn.inbuf))
        except (BlockingIOError, InterruptedError):
            return self._watch(conn, selectors.EVENT_READ)
        except OSError:
            return self._close(conn)
        if not chunk:
            return self._close(conn)  # the client gave up before finishing its request
        start = max(0, len(conn.inbuf) - 3)
        conn.inbuf += chunk
        end = HEAD_END.search(conn.inbuf, start)
        first_line = conn.inbuf.split(b"\n", 1)[0] if end is None else b""
        if end is not None and end.start() <= limits.max_head_bytes:
            parsed = parse_head(bytes(conn.inbuf[:end.start()]), limits)
            if isinstance(parsed, Response):
                return self._answer(conn, parsed, with_body=True)
            return self._dispatch(conn, parsed)
        if len(first_line) > limits.max_request_line:
            self._answer(conn, error_response(
                414, f"request line over {limits.max_request_line} bytes"))
        elif len(conn.inbuf) > limits.max_head_bytes:
            self._answer(conn, error_response(
                431, f"request head over {limits.max_head_bytes} bytes"))
        elif not METHOD_PREFIX.fullmatch(first_line.split(b" ", 1)[0]):
            # e.g. a TLS hello: no need to wait for the rest
            self._answer(conn, error_response(400, "not an HTTP request"))
        elif b"\n" in conn.inbuf and REQUEST_LINE.fullmatch(first_line) is None:
            self._answer(conn, error_response(400, "malformed request line"))
        else:
            self._watch(conn, selectors.EVENT_READ)

    def _dispatch(self, conn: _Conn, request: Request) -> None:
        with_body = request.method != "HEAD"
        if request.method not in ("GET", "HEAD"):
            return self._answer(conn, error_response(405, "method not allowed",
                                                     ("Allow", "GET, HEAD")))
        route = self._routes.get(request.path)
        if route is None:
            return self._answer(conn, Response(404, json.dumps(
                {"error": "not found", "paths": sorted(self._routes)}).encode() + b"\n"),
                with_body)
        if request.path in self._inline:
            return self._answer_bytes(conn, self._render(request, route))
        if self._rendering >= self._limits.render_backlog:
            return self._answer(conn, error_response(503, "busy rendering, retry",
                                                     ("Retry-After", "1")), with_body)
        self._rendering += 1
        conn.phase, conn.deadline = RENDER, time.monotonic() + self._limits.render_seconds
        self._watch(conn, 0)  # a body, if any, stays unread until the answer is written
        self._jobs.put((conn, request, route))

    def _answer(self, conn: _Conn, response: Response, with_body: bool = True) -> None:
        self._answer_bytes(conn, serialize(response, with_body))

    def _answer_bytes(self, conn: _Conn, answer: tuple[bytes, ...]) -> None:
        conn.inbuf = bytearray()
        conn.phase, conn.deadline = WRITE, time.monotonic() + self._limits.write_seconds
        conn.out = [memoryview(part) for part in answer]
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            while conn.out:
                sent = conn.sock.sendmsg(conn.out)  # head and body in one write
                while sent and sent >= len(conn.out[0]):
                    sent -= len(conn.out.pop(0))
                if sent:
                    conn.out[0] = conn.out[0][sent:]
        except (BlockingIOError, InterruptedError):
            return self._watch(conn, selectors.EVENT_WRITE)
        except OSError:
            return self._close(conn)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return self._close(conn)
        conn.phase, conn.deadline = LINGER, time.monotonic() + self._limits.linger_seconds
        self._linger(conn)

    def _linger(self, conn: _Conn) -> None:
        """Drain what the client still sends until it closes, then close.

        Closing a socket with unread input makes the kernel send a reset, which can destroy
        our answer in the client's buffers before it reads it (a 431 to a 64 KiB header, say).
        """
        try:
            while chunk := conn.sock.recv(65536):
                conn.drained += len(chunk)
                if conn.drained > self._limits.linger_bytes:
                    return self._close(conn)
        except (BlockingIOError, InterruptedError):
            return self._watch(conn, selectors.EVENT_READ)
        except OSError:
            pass
        self._close(conn)

    def _expire(self, conn: _Conn) -> None:
        if conn.phase == READ and conn.inbuf:
            self._answer(conn, error_response(408, "request head not received in time"))
        elif conn.phase == RENDER:
            self._answer(conn, error_response(503, "the answer took too long"))
        else:  # silent since accept, too slow a reader, or not closing after the answer
            self._close(conn)

    def _watch(self, conn: _Conn, events: int) -> None:
        if events == conn.events:
            return
        if conn.events == 0:
            self._selector.register(conn.sock, events, conn)
        elif events == 0:
            self._selector.unregister(conn.sock)
        else:
            self._selector.modify(conn.sock, events, conn)
        conn.events = events

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn.sock.fileno(), None)
        try:
            if conn.events:
                self._selector.unregister(conn.sock)
        finally:  # whatever happens, the descriptor is not leaked
            conn.sock.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (the loop wakes anyway) or closed (stopped)
            self._wake_w.send(b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _close_all(self) -> None:
        for conn in list(self._conns.values()):
            conn.closed = True
            conn.sock.close()
        self._conns.clear()
        for closable in (self._listener, self._selector, self._wake_r, self._wake_w):
            closable.close()

    def _close_in_child(self) -> None:
        """After fork: close this process's copies only (no unregister: epoll is shared)."""
        self._stop_once.acquire(blocking=False)
        for sock in [self._listener, self._wake_r, self._wake_w,
                     *(conn.sock for conn in list(self._conns.values()))]:
            sock.close()
        self._selector.close()

    # --- the render threads ---------------------------------------------------------------

    def _render_forever(self) -> None:
        while (job := self._jobs.get()) is not None:
            conn, request, route = job
            # A connection closed meanwhile (deadline, stop) is not rendered for.
            answer = None if conn.closed or conn.phase != RENDER else self._render(request, route)
            self._done.append((conn, answer))
            self._wake()

    def _render(self, request: Request, route: Route) -> tuple[bytes, ...]:
        """Run a route; a fault is a 500, counted and logged once, never a dead thread."""
        try:
            return serialize(route(request.headers), request.method != "HEAD")
        except Exception as exc:  # noqa: BLE001
            self._faults.report(f"http {request.path}", exc)
            return serialize(error_response(500, "internal error, see the worker log"),
                              request.method != "HEAD")
