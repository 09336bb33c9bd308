"""The workers a command line expects when it starts: those that replied to the last one.

A command line is a new process each time and knows no workers, so it would wait its whole
discovery timeout for replies. On Redis the broker counts the listeners (see
:mod:`.collect`); on RabbitMQ it cannot, so the last call's repliers are kept in a small
file, and the next call expects those of them whose pidbox queue has a consumer now
(:func:`.collect.live_workers`). It is only a hint: a name in it that no longer listens is
not expected, and a worker missing from it is found by the grace for newcomers.

The file holds host names only, under ``$XDG_CACHE_HOME/celery-observe`` (``~/.cache`` by
default), one per broker and control exchange; when it cannot be read or written the call
just waits for discovery, as without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..redaction import masked_broker_url

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger("celery_observe")

#: Hints older than this are not used: the cluster they describe is likely gone.
MAX_AGE = 7 * 24 * 3600.0
#: A hint naming more workers is not checked: at 3 to 6 ms a check on RabbitMQ here,
#: checking more would cost about as long as the discovery wait it saves.
MAX_CHECKED = 50


class WorkerHints:
    """The host names that replied last time, kept in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._saved: frozenset[str] | None = None

    @classmethod
    def for_app(cls, app: Celery) -> WorkerHints:
        """The hint file of ``app``'s broker (its URL without the password) and exchange."""
        key = f"{masked_broker_url(app)} {app.conf.control_exchange}".encode()
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cls(base / "celery-observe" / f"workers-{hashlib.sha256(key).hexdigest()[:16]}.json")

    def load(self) -> set[str]:
        """The host names saved last, or none when the file is missing, unreadable or old."""
        try:
            saved = json.loads(self.path.read_text())
            if time.time() - float(saved["saved"]) > MAX_AGE:
                return set()
            hostnames = {name for name in saved["hostnames"] if isinstance(name, str)}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.debug("celery-observe: no worker hints from %s: %s", self.path, exc)
            return set()
        self._saved = frozenset(hostnames)
        return hostnames

    def save(self, hostnames: Iterable[str]) -> None:
        """Replace the hint with ``hostnames`` (written whole, so a reader never sees half)."""
        names = frozenset(hostnames)
        if not names or names == self._saved:
            return
        written = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, delete=False,
                                             prefix=".workers-", suffix=".tmp") as out:
                written = out.name
                json.dump({"saved": time.time(), "hostnames": sorted(names)}, out)
            os.replace(written, self.path)
        except OSError as exc:
            logger.debug("celery-observe: worker hints not saved to %s: %s", self.path, exc)
            if written is not None:
                with contextlib.suppress(OSError):
                    os.unlink(written)
            return
        self._saved = names
