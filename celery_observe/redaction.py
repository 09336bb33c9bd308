"""What celery-observe never shows: passwords of broker and backend URLs, and task arguments.

Every text we show or log that may hold a URL or a library's exception message goes
through :func:`mask_text`: each URL with credentials in it is masked by kombu's own
:func:`~kombu.utils.url.maybe_sanitize_url` (the masking of Celery's banner and
``Connection.as_uri()``), and the passwords of the app's own URLs are masked wherever
they appear, also outside a URL (``AUTH`` errors, connection reprs). Task arguments are
shown only on workers started with ``--observe-show-task-args``; without it they are
:data:`REDACTED`, and :class:`TaskArgsLogFilter` removes them from the one log line of
Celery's that prints them (``TaskPool: Apply ...``, logged at debug level).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlsplit

from kombu.utils.url import maybe_sanitize_url, url_to_parts

if TYPE_CHECKING:
    from celery import Celery

REDACTED: Final = "<redacted: start the worker with --observe-show-task-args to see arguments>"
MASK: Final = "**"

#: Something that looks like a URL inside free text (a message, a traceback).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>;,()]+")
#: The app settings that hold URLs, some with several alternates (";" or a list).
_URL_SETTINGS: Final = ("broker_url", "broker_read_url", "broker_write_url", "result_backend")
#: Celery's log line (logger ``celery.pool``) that prints a task's arguments.
POOL_APPLY_PREFIX: Final = "TaskPool: Apply"


def _has_password(url: str) -> bool:
    try:
        return "@" in url and bool(url_to_parts(url).password)
    except ValueError:  # kombu cannot parse it (a bad port...): assume the worst
        return True


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``**``; a URL without one comes back unchanged."""
    if not _has_password(url):
        return url
    try:
        return str(maybe_sanitize_url(url, mask=MASK))
    except ValueError:  # hide all of the userinfo
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{MASK}@{rest.rpartition('@')[2]}"


def masked_broker_url(app: Celery) -> str:
    """``app``'s broker URL with its password masked (``as_uri`` shows ``:**@`` even when
    there is none, which would send a reader looking for a password)."""
    return mask_url(app.connection_for_read().as_uri(include_password=True))


def _mask_secrets(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL's password and every one of ``secrets`` masked.

    A URL with a password is masked by kombu alone, so it reads as Celery shows it
    (``amqp://guest:**@host//``: the user name stays even where it equals the password).
    """
    ordered = sorted(secrets, key=len, reverse=True)  # "ab" inside "abc" goes last
    pieces: list[str] = []
    end = 0
    for match in _URL_IN_TEXT.finditer(text):
        pieces.append(_mask_secrets(text[end:match.start()], ordered))
        url = match.group(0)
        pieces.append(mask_url(url) if _has_password(url) else _mask_secrets(url, ordered))
        end = match.end()
    pieces.append(_mask_secrets(text[end:], ordered))
    return "".join(pieces)


def _urls(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(";") if "://" in part]
    if isinstance(value, (list, tuple)):
        return [url for item in value for url in _urls(item)]
    return []


def secrets_of(app: Celery) -> frozenset[str]:
    """The passwords in ``app``'s broker and result backend settings, as given and decoded."""
    decoded: set[str] = set()
    as_given: set[str] = set()
    conf = app.conf
    for setting in _URL_SETTINGS:
        for url in _urls(conf.get(setting)):
            try:
                decoded.add(url_to_parts(url).password or "")
                as_given.add(urlsplit(url).password or "")
            except ValueError:
                continue
    options = conf.get("broker_transport_options") or {}
    if isinstance(options, dict) and isinstance(options.get("password"), str):
        decoded.add(options["password"])
    found = decoded | as_given | {quote(secret, safe="") for secret in decoded}
    found.discard("")
    return frozenset(found)


class Masker:
    """:func:`mask_text` with the passwords of one app: what every shown message goes through."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = frozenset(secret for secret in secrets if secret)

    @classmethod
    def for_app(cls, app: Celery) -> Masker:
        return cls(secrets_of(app))

    def __call__(self, text: str) -> str:
        return mask_text(text, self.secrets)


class TaskArgsLogFilter(logging.Filter):
    """Replaces the task arguments in Celery's ``TaskPool: Apply`` debug line by REDACTED.

    Attached to the ``celery.pool`` logger, which only builds that record at debug level,
    so at other levels it costs nothing.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if (isinstance(message, str) and message.startswith(POOL_APPLY_PREFIX)
                and isinstance(record.args, tuple) and record.args):
            record.args = (record.args[0],) + (REDACTED,) * (len(record.args) - 1)
        return True
