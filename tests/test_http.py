"""The in-worker HTTP server: routing, methods, negotiation, faults and the port."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

import pytest
from prometheus_client import CollectorRegistry, Counter

from celery_observe.faults import FaultLog
from celery_observe.http import ObserveHTTPServer, Response, json_response

from .workers import wait_until


def broken(_headers: Mapping[str, str]) -> Response:
    raise RuntimeError("injected fault")


@pytest.fixture
def server() -> Iterator[tuple[ObserveHTTPServer, Counter]]:
    registry = CollectorRegistry()
    errors = Counter("errors", "faults", ["component"], registry=registry)
    routes = {
        "/hello": lambda headers: json_response(200, {"accept": headers.get("accept")}),
        "/broken": broken,
    }
    http = ObserveHTTPServer("127.0.0.1", 0, routes, FaultLog(errors))
    http.start()
    yield http, errors
    http.stop()


def fetch(http: ObserveHTTPServer, path: str, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{http.bound_port}{path}",
                                     method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_known_path_answers_with_its_route(server: tuple[ObserveHTTPServer, Counter]) -> None:
    """A GET of a route returns its body; the query string does not change the route."""
    status, headers, body = fetch(server[0], "/hello?x=../../etc", headers={"Accept": "a/b"})
    assert (status, body) == (200, b'{"accept": "a/b"}\n')
    assert headers["Content-Type"] == "application/json"


def test_unknown_path_is_404(server: tuple[ObserveHTTPServer, Counter]) -> None:
    """A path with no route answers 404 and lists the known paths."""
    status, _, body = fetch(server[0], "/../hello")
    assert status == 404 and b'"/hello"' in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_other_methods_are_405(server: tuple[ObserveHTTPServer, Counter], method: str) -> None:
    """Every method but GET and HEAD, even an unknown one, answers 405 with Allow."""
    status, headers, _ = fetch(server[0], "/hello", method=method)
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_head_has_headers_but_no_body(server: tuple[ObserveHTTPServer, Counter]) -> None:
    """HEAD gives the GET's status and length without a body."""
    status, headers, body = fetch(server[0], "/hello", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


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


def test_connections_beyond_the_limit_are_closed() -> None:
    """With every slot held by a silent client, the next connection is closed unanswered."""
    http = ObserveHTTPServer("127.0.0.1", 0, {"/x": lambda h: json_response(200, {})},
                             FaultLog(), max_connections=2)
    http.start()
    silent = [socket.create_connection(("127.0.0.1", http.bound_port)) for _ in range(2)]
    try:
        extra = socket.create_connection(("127.0.0.1", http.bound_port), timeout=5)
        extra.sendall(b"GET /x HTTP/1.0\r\n\r\n")
        assert extra.recv(100) == b""
        extra.close()
    finally:
        for sock in silent:
            sock.close()
    def answers() -> bool:
        try:
            return fetch(http, "/x")[0] == 200
        except OSError:  # refused while the slots are still being freed
            return False

    wait_until(answers, 10, "a freed slot to serve again")
    http.stop()
