"""HTTP/1.1 messages of the in-worker server: request heads in, whole answers out.

Kept apart from the server loop (:mod:`celery_observe.http`) so each limit on what a
client may send is checked in one place, on bytes, before any route sees the request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

# Defaults of :class:`Limits`; each bounds what one client, or all of them, can take.
MAX_CONNECTIONS = 256      # open at once; at the cap the oldest waiting on its client makes room,
#                            so a flood of silent or slow clients cannot lock the probes out
MAX_HEAD_BYTES = 16 * 1024  # request line + headers; a larger head is 431 (Prometheus sends ~300 B)
MAX_REQUEST_LINE = 8 * 1024  # a longer request line (a huge query) is 414
MAX_HEADERS = 100          # more header lines is 431
HEAD_SECONDS = 5.0         # from accept to a complete head; then 408 (or a silent close)
RENDER_SECONDS = 10.0      # a pooled route answering later is 503 (Prometheus' scrape timeout)
WRITE_SECONDS = 10.0       # to take the whole answer; a slower reader is dropped
LINGER_SECONDS = 2.0       # after the answer, time for the client to close first (see _linger)
LINGER_BYTES = 64 * 1024   # unread request bytes drained after the answer before a hard close
RENDER_THREADS = 2         # threads running pooled routes, fixed from start() to stop()
RENDER_BACKLOG = 16        # pooled requests queued or running; beyond it 503 at once

TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
METHOD_PREFIX = re.compile(TOKEN + rb"*")
REQUEST_LINE = re.compile(rb"(" + TOKEN + rb"+) ([\x21-\x7e]+) HTTP/1\.[01]\r?")
HEADER = re.compile(rb"(" + TOKEN + rb"+):[ \t]*([\x20-\x7e\t\x80-\xff]*?)[ \t]*\r?")
HEAD_END = re.compile(rb"\r?\n\r?\n")
BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class Response:
    """What a route answers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload, default=str, sort_keys=True).encode() + b"\n")


Route = Callable[[Mapping[str, str]], Response]  # request headers, names lower-cased


@dataclass(frozen=True)
class Limits:
    """The server's bounds; tests shorten them, the worker uses the defaults."""

    max_connections: int = MAX_CONNECTIONS
    max_head_bytes: int = MAX_HEAD_BYTES
    max_request_line: int = MAX_REQUEST_LINE
    max_headers: int = MAX_HEADERS
    head_seconds: float = HEAD_SECONDS
    render_seconds: float = RENDER_SECONDS
    write_seconds: float = WRITE_SECONDS
    linger_seconds: float = LINGER_SECONDS
    linger_bytes: int = LINGER_BYTES
    render_threads: int = RENDER_THREADS
    render_backlog: int = RENDER_BACKLOG


def error_response(status: int, message: str, *headers: tuple[str, str]) -> Response:
    return Response(status, json.dumps({"error": message}).encode() + b"\n", headers=headers)


def serialize(response: Response, with_body: bool) -> tuple[bytes, ...]:
    """The whole answer: its head and its body, always HTTP/1.1 and ``Connection: close``.

    Two buffers, written together (``sendmsg``): joined, a /metrics page of megabytes
    would be copied once more for each scrape.
    """
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {response.status} {reason}", f"Date: {formatdate(usegmt=True)}",
             "Server: celery-observe", f"Content-Type: {response.content_type}",
             f"Content-Length: {len(response.body)}", "Cache-Control: no-store",
             "Connection: close", *(f"{name}: {value}" for name, value in response.headers)]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return (head, response.body) if with_body and response.body else (head,)


@dataclass(frozen=True)
class Request:
    """One parsed request head."""

    method: str
    path: str
    headers: dict[str, str]


def parse_head(head: bytes, limits: Limits) -> Request | Response:
    """The request, or the 4xx answer to a head that cannot be one."""
    lines = head.split(b"\n")
    if len(lines[0]) > limits.max_request_line:
        return error_response(414, f"request line over {limits.max_request_line} bytes")
    line = REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        return error_response(400, "malformed request line: expected 'GET /path HTTP/1.1'")
    if len(lines) - 1 > limits.max_headers:
        return error_response(431, f"more than {limits.max_headers} header lines")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        header = HEADER.fullmatch(raw)
        if header is None:  # also obsolete line folding and control characters
            return error_response(400, "malformed header line")
        name, value = header[1].decode().lower(), header[2].decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    target = line[2].decode()
    try:
        path = target.split("?", 1)[0] if target.startswith("/") else urlsplit(target).path
    except ValueError:  # e.g. "http://[::1/": a bracket left open
        path = ""
    if not path.startswith("/"):
        return error_response(400, "the request target must be a path such as /metrics")
    if _malformed_query(target.partition("?")[2]):
        return error_response(400, "malformed query string (no endpoint takes parameters)")
    return Request(line[1].decode(), path, headers)


def _malformed_query(query: str) -> bool:
    """A query that is not valid percent-encoding, or encodes control characters.

    No route reads the query, so a well-formed one (a cache buster) is ignored; junk is
    refused rather than silently served.
    """
    if BAD_PERCENT.search(query):
        return True
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in unquote(query))
