"""HTTP abuse against a real observed worker: junk, floods and slow clients, all at once.

Every abusive connection gets a 4xx or a closed connection within the server's deadlines,
``/healthz`` answers 200 throughout (its latency is recorded, not asserted: the machine is
shared), and the worker's threads and file descriptors return exactly to their baseline.
"""

from __future__ import annotations

import contextlib
import re
import resource
import selectors
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil
import pytest

from celery_observe.testing import wait_until
from celery_observe.worker import http_messages as http

from ..conftest import broker_url
from ..workers import WorkerProcess

pytestmark = pytest.mark.broker

CLOSED = None  # the outcome of a connection closed without an answer
FLOOD = 1000  # silent connections opened at once
SLOW_CLIENTS = 20  # each sends one byte per second
OTHERS_AT = 0.5  # seconds after the flood the other abusers start
#: The longest any abusive connection may live: a head deadline, then the answer and linger.
LIFETIME = http.HEAD_SECONDS + http.LINGER_SECONDS + 2.0


@dataclass
class Abuser:
    """One abusive client: what it sends, how fast, and the outcomes it may see."""

    kind: str
    payload: bytes
    expect: frozenset[int | None]
    start_at: float = 0.0
    pace: float = 0.0  # seconds between single bytes; 0 sends everything at once
    sock: socket.socket | None = None
    sent: int = 0
    received: bytes = b""
    opened: float = 0.0
    next_byte: float = 0.0
    ended: float | None = None
    refused: bool = False

    @property
    def outcome(self) -> int | str | None:
        if self.refused:
            return "refused"
        if not self.received:
            return CLOSED
        status = re.match(rb"HTTP/1\.1 (\d{3}) ", self.received)
        return int(status[1]) if status else f"not HTTP: {self.received[:40]!r}"


def abusers() -> list[Abuser]:
    def one(kind: str, payload: bytes, *statuses: int | None) -> Abuser:
        return Abuser(kind, payload, frozenset(statuses), start_at=OTHERS_AT)

    get = b"GET %s HTTP/1.1\r\nHost: abuse\r\n\r\n"
    return [
        *(Abuser("silent flood", b"", frozenset({CLOSED})) for _ in range(FLOOD)),
        *(Abuser("one byte per second", get % b"/healthz", frozenset({408}), OTHERS_AT, 1.0)
          for _ in range(SLOW_CLIENTS)),
        *(one("malformed request line", line + b"\r\n\r\n", 400) for line in (
            b"GARBAGE", b"GET /metrics", b"GET /metrics HTTP/9.9", b"GET  /metrics HTTP/1.1",
            b"GET /metrics HTTP/1.1 extra", b"GET /met\x00rics HTTP/1.1", b"", b"\x00" * 64,
            b"GET /metrics HTTP/1.1\r\nno colon", b"GET /metrics HTTP/1.1\r\nX: 1\r\n folded")),
        one("TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\xab" * 200, 400),
        one("64 KB header", b"GET /metrics HTTP/1.1\r\nX-Junk: " + b"a" * 65536 + b"\r\n\r\n",
            431),
        one("1000 headers", b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * 1000 + b"\r\n", 431),
        *(one("path traversal", get % target, 404) for target in (
            b"/../../etc/passwd", b"/%2e%2e/%2e%2e/etc/passwd", b"/..%2f..%2fetc%2fpasswd",
            b"//etc/passwd", b"/metrics/../../etc/passwd", b"http://x/../../etc/passwd")),
        one("path traversal", get % b"%2e%2e/%2e%2e/etc/passwd", 400),
        one("path traversal", get % b"../../etc/passwd", 400),
        one("path traversal", get % b"http://[::1/../etc/passwd", 400),
        one("very long query", get % (b"/metrics?" + b"q=%%&" * 5000), 414),
        one("other method", b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 405),
        one("other method", b"CONNECT evil:443 HTTP/1.1\r\n\r\n", 400),
        # The query is ignored, so junk in it still reaches the route: an answer, never a 5xx.
        one("query junk", get % b"/metrics?%%%&&==", 400),
        one("query junk", get % b"/healthz?\xff\xfe;;;", 400),  # not visible ASCII
        one("query junk", get % b"/healthz?;;;&&==%00", 400),
        # Renders beyond the render backlog are refused at once, not queued.
        *(one("/metrics burst", get % b"/metrics", 200, 503) for _ in range(50)),
    ]


def drive(port: int, clients: list[Abuser], timeout: float) -> None:
    """Run every client on one selector until each has been answered and closed."""
    selector = selectors.DefaultSelector()
    pending = sorted(clients, key=lambda client: client.start_at)
    begin, live = time.monotonic(), 0

    def end(client: Abuser) -> None:
        nonlocal live
        assert client.sock is not None
        selector.unregister(client.sock)
        client.sock.close()
        client.ended, live = time.monotonic(), live - 1

    while (pending or live) and time.monotonic() < begin + timeout:
        now = time.monotonic()
        while pending and begin + pending[0].start_at <= now:
            client = pending.pop(0)
            client.sock = socket.socket()
            client.sock.setblocking(False)
            client.sock.connect_ex(("127.0.0.1", port))
            client.opened = client.next_byte = now
            unpaced = client.payload and not client.pace
            selector.register(client.sock, selectors.EVENT_READ
                              | (selectors.EVENT_WRITE if unpaced else 0), client)
            live += 1
        for key, mask in selector.select(0.02):
            client = key.data
            if mask & selectors.EVENT_READ:
                chunk: bytes | None
                try:
                    chunk = client.sock.recv(65536)
                except BlockingIOError:
                    chunk = None
                except ConnectionRefusedError:
                    client.refused, chunk = True, b""
                except ConnectionResetError:
                    chunk = b""
                if chunk == b"":
                    end(client)
                    continue
                client.received += chunk or b""
            if mask & selectors.EVENT_WRITE:
                try:
                    client.sent += client.sock.send(client.payload[client.sent:])
                except BlockingIOError:
                    pass
                except OSError:  # the server answered and stopped reading: just read
                    client.sent = len(client.payload)
                if client.sent == len(client.payload) or client.received:
                    selector.modify(client.sock, selectors.EVENT_READ, client)
        now = time.monotonic()
        for key in list(selector.get_map().values()):
            client = key.data
            if client.pace and not client.received and client.sent < len(client.payload) \
                    and now >= client.next_byte:
                with contextlib.suppress(OSError):  # still connecting, or closed: read tells
                    client.sent += client.sock.send(client.payload[client.sent:client.sent + 1])
                    client.next_byte = now + client.pace
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()


class Prober(threading.Thread):
    """Probes ``/healthz`` every 20 ms with a 1 s timeout, as a kubelet would, only faster."""

    def __init__(self, port: int, sample: Callable[[], None]) -> None:
        super().__init__(name="healthz-prober", daemon=True)
        self.port, self.sample = port, sample
        self.results: list[tuple[int | str, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.02):
            started = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n")
                    answer = b""
                    while chunk := sock.recv(4096):
                        answer += chunk
                outcome: int | str = int(answer.split(b" ", 2)[1])
            except (OSError, IndexError, ValueError) as exc:
                outcome = repr(exc)
            self.results.append((outcome, time.monotonic() - started))
            self.sample()


@pytest.fixture
def descriptors_for_the_flood() -> Iterator[None]:
    """This process opens over a thousand sockets: raise a low soft limit (as on 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = FLOOD + 500
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the descriptor limit {hard} is below the {needed} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("descriptors_for_the_flood")
def test_abuse_leaves_probes_answering_and_resources_at_baseline(
        queue_name: str, figure: Callable[[str, str], None]) -> None:
    """Under concurrent HTTP abuse every abuser gets a 4xx or a close, /healthz stays 200."""
    with WorkerProcess(broker_url("redis"), queue_name, pool="prefork") as worker:
        assert worker.process is not None and worker.port is not None
        main = psutil.Process(worker.process.pid)
        broker_port = urlsplit(broker_url("redis")).port or 6379
        assert worker.get("/metrics")[0] == worker.get("/healthz")[0] == 200  # warm up

        def resources() -> tuple[int, int]:
            return main.num_threads(), main.num_fds()

        def resources_but_the_broker() -> tuple[int, int]:
            """Threads and fds, less the broker sockets, which the worker opens as it needs."""
            threads, fds = resources()
            return threads, fds - sum(1 for c in main.net_connections("tcp")
                                      if c.raddr and c.raddr.port == broker_port)

        def http_clients() -> list[str]:
            return [f"{c.raddr} {c.status}" for c in main.net_connections("tcp")
                    if c.laddr.port == worker.port and c.status != psutil.CONN_LISTEN]

        wait_until(lambda: not http_clients(), 10, "the warm-up connections to close")
        baseline = resources_but_the_broker()
        peak = list(resources())

        def sample() -> None:
            threads, fds = resources()
            peak[:] = [max(peak[0], threads), max(peak[1], fds)]

        clients = abusers()
        prober = Prober(worker.port, sample)
        prober.start()
        started = time.monotonic()
        drive(worker.port, clients, timeout=OTHERS_AT + LIFETIME + 5)
        took = time.monotonic() - started
        prober.halt.set()
        prober.join(5)

        hung = [(c.kind, c.received[:40]) for c in clients if c.ended is None]
        assert hung == []
        wrong = Counter((c.kind, c.outcome) for c in clients if c.outcome not in c.expect)
        assert wrong == {}
        longest = max((c.ended or 0) - c.opened for c in clients)
        assert longest < LIFETIME
        failed_probes = Counter(outcome for outcome, _ in prober.results if outcome != 200)
        assert failed_probes == {} and len(prober.results) > 50

        try:
            wait_until(lambda: resources_but_the_broker() == baseline, 10,
                       "threads and fds to return")
        except AssertionError:
            raise AssertionError(f"threads and fds {resources_but_the_broker()} != {baseline}; "
                                 f"HTTP clients: {http_clients()}; "
                                 f"{main.net_connections('all')}",
                                 ) from None
        faults = {dict(labels)["component"]: value
                  for (name, labels), value in worker.metrics().items()
                  if name == "celery_observe_internal_errors_total"}
        assert {c: n for c, n in faults.items() if c.startswith("http")} == {}  # none failed

    latencies = sorted(seconds * 1000 for _, seconds in prober.results)
    outcomes = Counter((c.kind, c.outcome) for c in clients)
    figure("abusive connections", f"{len(clients)} in {took:.1f} s, the longest lived "
           f"{longest:.1f} s")
    figure("outcomes", ", ".join(f"{kind} -> {outcome or 'closed'}: {count}"
                                 for (kind, outcome), count in sorted(outcomes.items(), key=str)))
    figure("/healthz probes meanwhile", f"{len(latencies)}, all 200")
    figure("/healthz latency ms", f"p50 {statistics.median(latencies):.1f}, "
           f"p99 {latencies[int(len(latencies) * 0.99)]:.1f}, max {latencies[-1]:.1f}")
    figure("worker threads / fds", f"baseline {baseline[0]} / {baseline[1]} less broker "
           f"sockets, peak during abuse {peak[0]} / {peak[1]} in all")
