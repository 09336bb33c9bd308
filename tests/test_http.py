"""The in-worker HTTP server: routing, methods, faults, the port, and every limit it keeps."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from celery_observe.faults import FaultLog
from celery_observe.testing import wait_until
from celery_observe.worker import http_server as http_module
from celery_observe.worker.http_server import (
    Limits,
    ObserveHTTPServer,
    Response,
    Route,
    json_response,
)


def broken(_headers: Mapping[str, str]) -> Response:
    raise RuntimeError("injected fault")


def hello(headers: Mapping[str, str]) -> Response:
    return json_response(200, {"accept": headers.get("accept")})


@contextlib.contextmanager
def serving(routes: Mapping[str, Route], inline: tuple[str, ...] = (),
            **limits: Any) -> Iterator[tuple[ObserveHTTPServer, Counter]]:
    """A started server on a free port with ``limits``, and its fault counter."""
    errors = Counter("errors", "faults", ["component"], registry=CollectorRegistry())
    http = ObserveHTTPServer("127.0.0.1", 0, routes, FaultLog(errors), inline_paths=inline,
                             limits=Limits(**limits))
    http.start()
    try:
        yield http, errors
    finally:
        http.stop()


@pytest.fixture
def server() -> Iterator[tuple[ObserveHTTPServer, Counter]]:
    with serving({"/hello": hello, "/broken": broken}, inline=("/hello",)) as started:
        yield started


def fetch(http: ObserveHTTPServer, path: str, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{http.bound_port}{path}",
                                     method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def connect(http: ObserveHTTPServer, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", http.bound_port), timeout=5)
    sock.sendall(data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as the end)."""
    received = b""
    with sock:
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def exchange(http: ObserveHTTPServer, data: bytes) -> bytes:
    return read_all(connect(http, data))


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_known_path_answers_with_its_route(server: tuple[ObserveHTTPServer, Counter]) -> None:
    """A GET of a route returns its body; the query string does not change the route."""
    status_code, headers, body = fetch(server[0], "/hello?x=../../etc", headers={"Accept": "a/b"})
    assert (status_code, body) == (200, b'{"accept": "a/b"}\n')
    assert headers["Content-Type"] == "application/json"


def test_answer_is_http11_and_closes(server: tuple[ObserveHTTPServer, Counter]) -> None:
    """Every answer says HTTP/1.1 and Connection: close, and the server then closes."""
    answer = exchange(server[0], b"GET /hello HTTP/1.0\r\n\r\n")
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nConnection: close" in head
    assert body == b'{"accept": null}\n'


def test_unknown_path_is_404(server: tuple[ObserveHTTPServer, Counter]) -> None:
    """A path with no route answers 404 and lists the known paths; nothing is normalised."""
    status_code, _, body = fetch(server[0], "/../hello")
    assert status_code == 404
    assert body == b'{"error": "not found", "paths": ["/broken", "/hello"]}\n'


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_other_methods_are_405(server: tuple[ObserveHTTPServer, Counter], method: str) -> None:
    """Every method but GET and HEAD, even an unknown one, answers 405 with Allow."""
    status_code, headers, _ = fetch(server[0], "/hello", method=method)
    assert status_code == 405 and headers["Allow"] == "GET, HEAD"


def test_head_has_headers_but_no_body(server: tuple[ObserveHTTPServer, Counter]) -> None:
    """HEAD gives the GET's status and length without a body."""
    answer = exchange(server[0], b"HEAD /hello HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n")
    assert b"\r\nContent-Length: 17\r\n" in answer


def test_route_fault_is_500_and_counted(server: tuple[ObserveHTTPServer, Counter],
                                        caplog: pytest.LogCaptureFixture) -> None:
    """A route that raises answers 500, is counted each time and logged once."""
    http, errors = server
    assert fetch(http, "/broken")[0] == 500
    assert fetch(http, "/broken")[0] == 500
    assert errors.labels("http /broken")._value.get() == 2
    logged = [r for r in caplog.records if r.name == "celery_observe"]
    assert len(logged) == 1 and "http /broken" in logged[0].getMessage()
    assert fetch(http, "/hello")[0] == 200


def test_stop_releases_the_port_and_is_idempotent() -> None:
    """After stop() the port can be bound again at once; a second stop() does nothing."""
    http = ObserveHTTPServer("127.0.0.1", 0, {}, FaultLog())
    http.start()
    port = http.bound_port
    http.stop()
    http.stop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_busy_port_raises_oserror() -> None:
    """Binding a port another socket listens on raises OSError for the caller to handle."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            ObserveHTTPServer("127.0.0.1", taken.getsockname()[1], {}, FaultLog())


def test_ipv6_address_is_served() -> None:
    """An IPv6 address binds an IPv6 socket."""
    try:
        http = ObserveHTTPServer("::1", 0, {"/hello": hello}, FaultLog())
    except OSError:
        pytest.skip("no IPv6 loopback here")
    http.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{http.bound_port}/hello", timeout=5) as reply:
            assert reply.status == 200
    finally:
        http.stop()


def test_thread_count_is_fixed_from_start_to_stop() -> None:
    """start() adds one I/O thread and the render threads; serving adds none; stop() joins."""
    before = threading.active_count()
    with serving({"/hello": hello, "/pooled": hello}, inline=("/hello",),
                 render_threads=3) as (http, _):
        assert threading.active_count() == before + 4
        for _ in range(10):
            assert fetch(http, "/hello")[0] == fetch(http, "/pooled")[0] == 200
        assert threading.active_count() == before + 4
    assert threading.active_count() == before


def test_inline_route_answers_while_pooled_routes_render() -> None:
    """With every render thread stuck in a slow route, an inline route still answers."""
    release = threading.Event()

    def slow(_headers: Mapping[str, str]) -> Response:
        release.wait(10)
        return json_response(200, {})

    with serving({"/slow": slow, "/hello": hello}, inline=("/hello",)) as (http, _):
        stuck = [connect(http, b"GET /slow HTTP/1.1\r\n\r\n") for _ in range(2)]
        wait_until(lambda: http._rendering == 2, 5, "both renders to start")
        assert fetch(http, "/hello")[0] == 200
        release.set()
        assert [status(read_all(sock)) for sock in stuck] == [200, 200]


def test_full_render_backlog_is_503() -> None:
    """Beyond the render backlog a pooled route answers 503 with Retry-After at once."""
    release = threading.Event()

    def slow(_headers: Mapping[str, str]) -> Response:
        release.wait(10)
        return json_response(200, {})

    with serving({"/slow": slow}, render_threads=1, render_backlog=2) as (http, _):
        queued = [connect(http, b"GET /slow HTTP/1.1\r\n\r\n") for _ in range(2)]
        wait_until(lambda: http._rendering == 2, 5, "both to be queued")
        answer = exchange(http, b"GET /slow HTTP/1.1\r\n\r\n")
        assert status(answer) == 503 and b"\r\nRetry-After: 1\r\n" in answer
        release.set()
        assert [status(read_all(sock)) for sock in queued] == [200, 200]


def test_render_past_its_deadline_is_503() -> None:
    """A pooled route slower than the render deadline answers 503; its late result is dropped."""
    release = threading.Event()

    def slow(_headers: Mapping[str, str]) -> Response:
        release.wait(10)
        return json_response(200, {})

    with serving({"/slow": slow}, render_seconds=0.3) as (http, _):
        started = time.monotonic()
        assert status(exchange(http, b"GET /slow HTTP/1.1\r\n\r\n")) == 503
        assert 0.3 <= time.monotonic() - started < 2
        release.set()


def test_silent_client_is_closed_at_the_head_deadline() -> None:
    """A client that sends nothing is closed, unanswered, once the head deadline passes."""
    with serving({"/hello": hello}, head_seconds=0.3) as (http, _):
        started = time.monotonic()
        assert exchange(http, b"") == b""
        assert 0.3 <= time.monotonic() - started < 2


def test_slow_client_gets_408_at_the_head_deadline() -> None:
    """A client still sending its head at the deadline gets 408 and is closed."""
    with serving({"/hello": hello}, head_seconds=0.3) as (http, _):
        started = time.monotonic()
        assert status(exchange(http, b"GET /hello HTTP/1.1\r\nHost: x")) == 408
        assert 0.3 <= time.monotonic() - started < 2


def test_oversized_head_is_431() -> None:
    """A head over the size limit is 431 and delivered, though the client sent more."""
    with serving({"/hello": hello}, max_head_bytes=1024) as (http, _):
        big = b"GET /hello HTTP/1.1\r\nX-Junk: " + b"a" * 64 * 1024 + b"\r\n\r\n"
        assert status(exchange(http, big)) == 431


def test_too_many_header_lines_is_431() -> None:
    """More header lines than the limit is 431."""
    with serving({"/hello": hello}, max_headers=3) as (http, _):
        head = b"GET /hello HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(4))
        assert status(exchange(http, head + b"\r\n")) == 431


def test_long_request_line_is_414() -> None:
    """A request line over its limit (a huge query) is 414, before the head is complete."""
    with serving({"/hello": hello}, max_request_line=100) as (http, _):
        assert status(exchange(http, b"GET /hello?" + b"q" * 200)) == 414


@pytest.mark.parametrize("request_line", [
    b"GARBAGE", b"GET /hello", b"GET /hello HTTP/2.0", b"GET /hello HTTP/1.1 extra",
    b"GET  /hello HTTP/1.1", b"GET /he\x00llo HTTP/1.1", b"GET hello HTTP/1.1", b"",
    b"GET /hello HTTP/1.1\r\nNo colon here", b"GET /hello HTTP/1.1\r\nX: 1\r\n folded",
    b"GET /hello HTTP/1.1\r\nBad Name: 1", b"GET /hello?%%%&&== HTTP/1.1",
    b"GET /hello?a=%0A HTTP/1.1",
])
def test_malformed_heads_are_400(server: tuple[ObserveHTTPServer, Counter],
                                 request_line: bytes) -> None:
    """A malformed request line, an unsupported version or a bad header line is 400."""
    assert status(exchange(server[0], request_line + b"\r\n\r\n")) == 400


def test_non_http_bytes_are_400_without_waiting() -> None:
    """Bytes that cannot start an HTTP request (a TLS hello) are 400 before any deadline."""
    with serving({"/hello": hello}, head_seconds=30) as (http, _):
        started = time.monotonic()
        assert status(exchange(http, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")) == 400
        assert time.monotonic() - started < 2


def test_request_body_is_ignored(server: tuple[ObserveHTTPServer, Counter]) -> None:
    """A GET with a body gets its answer; the body is never read as a request."""
    body = b"GET /broken HTTP/1.1\r\n\r\n" * 1000
    answer = exchange(server[0], b"GET /hello HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
    assert status(answer) == 200 and server[1].labels("http /broken")._value.get() == 0


def test_slow_reader_is_dropped_at_the_write_deadline() -> None:
    """A client that does not read a large answer is dropped at the write deadline."""
    size = 32 * 1024 * 1024
    with serving({"/big": lambda _h: Response(200, b"x" * size)}, inline=("/big",),
                 write_seconds=0.3) as (http, _):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", http.bound_port))
        sock.sendall(b"GET /big HTTP/1.1\r\n\r\n")
        wait_until(lambda: http.open_connections == 0, 5, "the slow reader to be dropped")
        assert len(read_all(sock)) < size


def test_at_the_cap_the_oldest_idle_connection_makes_room() -> None:
    """With every slot held by a silent client, a new one is served and the oldest closed."""
    with serving({"/hello": hello}, inline=("/hello",), max_connections=2) as (http, _):
        oldest, newer = connect(http), connect(http)
        wait_until(lambda: http.open_connections == 2, 5, "both silent clients to be held")
        assert status(exchange(http, b"GET /hello HTTP/1.1\r\n\r\n")) == 200
        assert read_all(oldest) == b""
        wait_until(lambda: http.open_connections == 1, 5, "only the newer silent client left")
        newer.close()


def test_at_the_cap_with_none_idle_the_oldest_slow_reader_makes_room() -> None:
    """With every slot held by a client not reading its answer, the oldest is dropped."""
    size = 32 * 1024 * 1024
    with serving({"/big": lambda _h: Response(200, b"x" * size), "/hello": hello},
                 inline=("/big", "/hello"), max_connections=2, write_seconds=60) as (http, _):
        readers = []
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", http.bound_port))
            sock.sendall(b"GET /big HTTP/1.1\r\n\r\n")
            readers.append(sock)
            wait_until(lambda: [c.phase for c in http._conns.values()]
                       == ["write"] * len(readers), 5, "the answer to stall")
        assert status(exchange(http, b"GET /hello HTTP/1.1\r\n\r\n")) == 200
        assert len(read_all(readers[0])) < size
        readers[1].close()


def test_at_the_cap_of_renders_in_flight_a_new_one_is_closed() -> None:
    """When every slot waits on a render, a new connection is closed unanswered."""
    release = threading.Event()

    def slow(_headers: Mapping[str, str]) -> Response:
        release.wait(10)
        return json_response(200, {})

    with serving({"/slow": slow}, max_connections=2) as (http, _):
        busy = [connect(http, b"GET /slow HTTP/1.1\r\n\r\n") for _ in range(2)]
        wait_until(lambda: http._rendering == 2, 5, "both renders to start")
        assert exchange(http, b"GET /slow HTTP/1.1\r\n\r\n") == b""
        release.set()
        assert [status(read_all(sock)) for sock in busy] == [200, 200]


def test_loop_fault_closes_only_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error handling one connection closes it, is counted, and serving goes on."""
    real = http_module.parse_head
    faults = iter([RuntimeError("injected loop fault")])

    def parse_once_broken(head: bytes, limits: Limits) -> Any:
        fault = next(faults, None)
        if fault is not None:
            raise fault
        return real(head, limits)

    monkeypatch.setattr(http_module, "parse_head", parse_once_broken)
    with serving({"/hello": hello}) as (http, errors):
        assert exchange(http, b"GET /hello HTTP/1.1\r\n\r\n") == b""
        assert errors.labels("http server")._value.get() == 1
        assert status(exchange(http, b"GET /hello HTTP/1.1\r\n\r\n")) == 200


@contextlib.contextmanager
def descriptor_headroom(free: int) -> Iterator[None]:
    """Lower this process's descriptor limit so exactly ``free`` more can be opened."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = {int(fd) for fd in os.listdir("/proc/self/fd")}  # one of them is listdir's own
    limit = next(n for n in range(soft) if n - len([fd for fd in used if fd < n]) + 1 == free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_out_of_descriptors_the_oldest_idle_connection_makes_room() -> None:
    """When accept runs out of descriptors, the oldest idle connection is closed for the new."""
    with serving({"/hello": hello}, inline=("/hello",), head_seconds=60) as (http, errors):
        with descriptor_headroom(5):
            oldest, newer = connect(http), connect(http)
            wait_until(lambda: http.open_connections == 2, 5, "both silent clients to be held")
            assert status(exchange(http, b"GET /hello HTTP/1.1\r\n\r\n")) == 200
            assert read_all(oldest) == b""
            newer.close()
        assert errors.labels("http server")._value.get() == 0


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_out_of_descriptors_with_none_idle_accepting_pauses_then_resumes() -> None:
    """With no descriptor and nothing idle to close, accepting waits until a connection ends."""
    release = threading.Event()

    def slow(_headers: Mapping[str, str]) -> Response:
        release.wait(10)
        return json_response(200, {})

    with serving({"/slow": slow, "/hello": hello}, inline=("/hello",)) as (http, errors):
        with descriptor_headroom(5):
            busy = [connect(http, b"GET /slow HTTP/1.1\r\n\r\n") for _ in range(2)]
            wait_until(lambda: http._rendering == 2, 5, "both renders to start")
            waiting = connect(http, b"GET /hello HTTP/1.1\r\n\r\n")
            wait_until(lambda: http._paused, 5, "accepting to pause")
            release.set()
            assert [status(read_all(sock)) for sock in busy] == [200, 200]
            assert status(read_all(waiting)) == 200
        assert errors.labels("http server")._value.get() == 0
