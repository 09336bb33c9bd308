"""kombu's filesystem transport, with each message file written whole before it appears.

The stock transport creates a message file, then locks and writes it; a reader that lists
the folder in between moves the empty file away and fails to decode it, which kills the
worker's consumer (measured here: a prefork worker died in 2 of 3 runs of 300 tasks at a
50 ms poll). This one writes under a name no reader takes (``.tmp``) and renames it into
place, which is atomic within a folder. Importing this module registers it as
``observe-filesystem://``; the processes that share a broker folder must all import it.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps

SCHEME = "observe-filesystem"


class Channel(filesystem.Channel):
    """A filesystem channel whose messages appear in the folder complete."""

    # kombu's own signatures disagree (message vs payload); this one follows the transport's.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # The stock name, so the stock reader orders and selects it as it always does.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        try:
            with open(path + ".tmp", "wb") as out:
                out.write(str(dumps(payload)).encode())  # type: ignore[no-untyped-call]
            os.replace(path + ".tmp", path)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {path!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
