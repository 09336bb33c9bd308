"""Asking an observed worker's HTTP server: the part every kind of test worker shares."""

from __future__ import annotations

import urllib.error
import urllib.request

from .metrics import Metrics, parse_metrics

#: A server bound to a wildcard address is asked on loopback.
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class ServedOverHttp:
    """URLs and requests for a worker serving on :attr:`address`, :attr:`port`."""

    address: str
    port: int | None

    def url(self, path: str) -> str:
        host = WILDCARDS.get(self.address, self.address)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}{path}"

    @property
    def metrics_url(self) -> str:
        """Where the worker serves its Prometheus page."""
        return self.url("/metrics")

    def get(self, path: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; an HTTP error status is an answer too."""
        request = urllib.request.Request(self.url(path), headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def status_code(self, path: str) -> int | None:
        """The status of ``GET path``, or None when nothing answers."""
        try:
            return self.get(path)[0]
        except OSError:
            return None

    def metrics(self) -> Metrics:
        """The samples ``/metrics`` serves now."""
        return parse_metrics(self.get("/metrics")[2].decode())
