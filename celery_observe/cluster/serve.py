"""``celery -A proj observe serve``: the cluster API on its own, behind uvicorn.

Every ``celery`` command imports the CLI, and a worker-only install has neither FastAPI nor
uvicorn, so this module imports nothing but the standard library and click at import time:
the web stack is loaded by :func:`serve` when the command runs.

Logging is ours, not uvicorn's access log: one line per request with method, path, status
and milliseconds, built from the ASGI scope's path alone, so neither a query string nor any
header (the bearer token travels in ``Authorization``) can reach a log line.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import socket

    from celery import Celery

    from .api.settings import ApiSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("celery_observe.serve")

INSTALL_HINT = "pip install 'celery-observe[api]'"
MIN_TOKEN_CHARS = 16
MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))' > {path}"
#: Seconds in-flight requests get to finish after SIGTERM before they are cancelled; one
#: request asks the workers at most twice, each within ``--timeout`` (1 s by default).
GRACE_SECONDS = 10
#: Longest path written to the log; the rest is cut (paths are the client's to choose).
MAX_LOGGED_PATH = 300

#: uvicorn's loggers and ours, one plain format on stderr; every other logger is left alone.
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "[%(asctime)s: %(levelname)s] %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                            "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"level": "WARNING"},  # off anyway (access_log=False): see RequestLog
        logger.name: {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def read_token_file(path: str) -> str:
    """The token in ``path``, stripped; a :class:`click.BadParameter` saying how to make one.

    Read from a file so the token never appears in ``ps`` or the shell's history.
    """
    make = f"make one with: {MAKE_TOKEN.format(path=path)}"
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise click.BadParameter(f"cannot read the token file {path} ({reason}); {make}") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise click.BadParameter(
            f"the token in {path} has {len(token)} characters, at least {MIN_TOKEN_CHARS} are "
            f"needed; {make}")
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise click.BadParameter(
            f"the token in {path} must be one word of printable ASCII (it is sent in an HTTP "
            f"header); {make}")
    return token


def missing_api_dependency() -> str | None:
    """Why the API cannot run here (FastAPI or uvicorn not installed), or None."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return (f"`observe serve` needs FastAPI and uvicorn ({exc.name or exc} is missing): "
                f"{INSTALL_HINT}")
    return None


def printable(path: str) -> str:
    """``path`` safe for one log line: control characters escaped, overlong paths cut."""
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in path)
    return shown if len(shown) <= MAX_LOGGED_PATH else shown[:MAX_LOGGED_PATH] + "..."


class RequestLog:
    """ASGI middleware: one line per HTTP request, ``METHOD PATH STATUS N.N ms CLIENT``.

    Only the scope's method, path and client address are read: never the query string,
    never a header, so a token cannot leak into the log whatever the client sends.
    """

    def __init__(self, app: ASGIApp, log: logging.Logger = logger) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what uvicorn answers if the app fails before starting a response

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            client = scope.get("client")
            self.log.info("%s %s %d %.1f ms %s", scope.get("method", "-"),
                          printable(str(scope.get("path", ""))), status,
                          (time.perf_counter() - started) * 1000.0,
                          client[0] if client else "-")


def url(host: str, port: int, prefix: str = "") -> str:
    return f"http://[{host}]:{port}{prefix}" if ":" in host else f"http://{host}:{port}{prefix}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def serve(app: Celery, settings: ApiSettings, *, host: str, port: int, prefix: str) -> None:
    """Serve the cluster API at ``prefix`` until SIGTERM or SIGINT, then return.

    uvicorn stops on either signal gracefully: it stops accepting, lets in-flight requests
    finish (up to :data:`GRACE_SECONDS`) and runs the lifespan shutdown, which closes the
    Cluster's broker connection. It then re-raises the signal to the handler it found; ours
    only asks the server to stop, so the process ends normally, exit code 0. Installed
    before uvicorn starts, it also turns a signal during startup into a clean stop.
    """
    import uvicorn
    from fastapi.responses import RedirectResponse

    from .api import create_app
    from .api.events import end_streams

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                for server in self.servers:
                    for sock in server.sockets:
                        bound_host, bound_port = sock.getsockname()[:2]
                        logger.info("celery-observe: serving the cluster API on %s (docs at %s)",
                                    url(bound_host, bound_port, prefix),
                                    url(bound_host, bound_port, "/docs"))

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            end_streams()  # open dashboard pages would hold the stop for GRACE_SECONDS
            await super().shutdown(sockets)

    web = create_app(app, settings, prefix=prefix)
    if prefix:  # "/" is where a person looks first; the dashboard is at the prefix's root
        web.add_api_route("/", lambda: RedirectResponse(f"{prefix}/"), include_in_schema=False)
    config = uvicorn.Config(RequestLog(web), host=host,
                            port=port, log_config=LOG_CONFIG, access_log=False, lifespan="on",
                            server_header=False, timeout_graceful_shutdown=GRACE_SECONDS)
    server = Server(config)
    if settings.shared_cache_url is not None:
        from ..redaction import mask_url

        logger.info("celery-observe: cached answers are shared with the other replicas through "
                    "%s", mask_url(settings.shared_cache_url))
    if not is_loopback(host) and settings.read_token is None:
        logger.warning("celery-observe: %s is reachable from other machines and reads need "
                       "no token: give --read-token-file, or serve behind a proxy that "
                       "authenticates", host)

    def stop(sig: int, frame: FrameType | None) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["RequestLog", "missing_api_dependency", "read_token_file", "serve"]
