"""What each path of a worker's HTTP server answers, built on the :class:`Observer`'s state.

Probes are answered on the server's I/O thread (cheap, never blocked by a render); the
``/metrics`` page negotiates text or OpenMetrics and gzip, ``/status`` is JSON.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from prometheus_client.exposition import choose_encoder, gzip_accepted

from .http_server import Response, Route, json_response
from .probes import ProbeResult

if TYPE_CHECKING:
    from .observer import Observer

#: Answered on the I/O thread: they must stay fast while /metrics renders.
INLINE_PATHS = frozenset({"/healthz", "/readyz"})


def metrics_response(observer: Observer, headers: Mapping[str, str]) -> Response:
    """The ``/metrics`` page in the format and encoding the scraper asked for."""
    _, content_type = choose_encoder(headers.get("accept", ""))
    body = observer.exposition.render(
        openmetrics=content_type.startswith("application/openmetrics-text"))
    extra: tuple[tuple[str, str], ...] = ()
    if gzip_accepted(headers.get("accept-encoding", "")):
        # Level 3: a third of level 6's time for 12% more bytes (5 MB page: 11 vs
        # 30 ms, 255 vs 228 KB); the CPU is the worker's, the bytes a LAN's.
        body = gzip.compress(body, compresslevel=3)
        extra = (("Content-Encoding", "gzip"),)
    return Response(200, body, content_type, extra)


def routes(observer: Observer) -> dict[str, Route]:
    """Every path the worker serves."""
    def probe(name: str, check: Callable[[], ProbeResult], status_on_fault: int) -> Route:
        def route(_headers: Mapping[str, str]) -> Response:
            try:
                result = check()
            except Exception as exc:  # noqa: BLE001
                observer.faults.report(f"http {name}", exc)
                return json_response(status_on_fault, {
                    "status": "unknown", "reason": f"the {name} check failed inside "
                    "celery-observe; see the worker log"})
            return json_response(result.http_status, result.body)
        return route

    return {
        "/metrics": lambda headers: metrics_response(observer, headers),
        # A fault in our own check must not get a healthy worker restarted: liveness
        # fails open; readiness fails closed, which only holds traffic back.
        "/healthz": probe("/healthz", observer.liveness, 200),
        "/readyz": probe("/readyz", observer.readiness, 503),
        "/status": lambda _headers: json_response(200, observer.status()),
    }
