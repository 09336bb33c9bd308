"""Server-Sent Events: one producer thread, any number of open streams.

However many pages are open, the cluster is asked once per interval: a named daemon thread
builds each frame once, encoded once, and hands the same bytes to every stream. A stream
holds at most the newest frame it has not sent yet, so a page that reads slower than frames
come skips the stale ones, and memory stays bounded whatever the number or the speed of
the pages. The thread runs only while a stream is open and ends by itself after the last
one closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable

logger = logging.getLogger("celery_observe.api")

THREAD_NAME = "celery-observe-events"
#: Seconds without a frame after which a stream sends a heartbeat: proxies keep the
#: connection open, and the page knows the server is alive while a frame is slow to build.
HEARTBEAT_SECONDS = 15.0
#: Milliseconds the browser waits before it reconnects a broken stream (SSE ``retry:``).
RETRY_MS = 2000
#: Streams one broadcast serves at once; more are refused with a 503.
MAX_STREAMS = 1000


def sse_event(event: str, data: str, event_id: int | None = None) -> bytes:
    """One SSE message: ``event:``, ``id:`` and a ``data:`` line per line of ``data``."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return ("\n".join(lines) + "\n\n").encode()


HEARTBEAT = sse_event("heartbeat", "{}")


class StreamsFullError(RuntimeError):
    """The broadcast already serves :data:`MAX_STREAMS` streams."""


class Stream:
    """One page's end of the broadcast: the newest unsent frame, handed into its event loop.

    :meth:`offer` and :meth:`close` may be called from any thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._frame: bytes | None = None
        self._closed = False
        self._ready = asyncio.Event()
        self.skipped = 0  # frames replaced before this stream could send them

    def offer(self, frame: bytes) -> None:
        self._call(self._keep, frame)

    def close(self) -> None:
        self._call(self._end)

    def _call(self, callback: Callable[..., None], *args: bytes) -> None:
        with contextlib.suppress(RuntimeError):  # its loop has closed: the stream is gone
            self._loop.call_soon_threadsafe(callback, *args)

    def _keep(self, frame: bytes) -> None:
        if self._frame is not None:
            self.skipped += 1
        self._frame = frame
        self._ready.set()

    def _end(self) -> None:
        self._closed = True
        self._ready.set()

    async def messages(self, heartbeat: float = HEARTBEAT_SECONDS) -> AsyncIterator[bytes]:
        """The stream's body: ``retry:``, then each frame, or a heartbeat when none comes."""
        yield f"retry: {RETRY_MS}\n\n".encode()
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), heartbeat)
            except asyncio.TimeoutError:
                yield HEARTBEAT
                continue
            self._ready.clear()
            if self._closed:
                return
            frame, self._frame = self._frame, None
            if frame is not None:
                yield frame


#: Every broadcast of this process, for :func:`end_streams`.
_broadcasts: weakref.WeakSet[Broadcast] = weakref.WeakSet()


class Broadcast:
    """Builds a frame every ``interval`` seconds while a stream is open, for all of them.

    ``build`` runs in the producer thread only, so it needs no lock of its own; it should
    not raise (a frame that fails is logged and skipped).
    """

    def __init__(self, build: Callable[[], bytes], interval: float, *,
                 max_streams: int = MAX_STREAMS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._build = build
        self._interval = interval
        self._max_streams = max_streams
        self._clock = clock
        self._streams: set[Stream] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._latest: bytes | None = None
        self._wake = threading.Event()  # ends the producer's wait early
        self.frames = 0  # frames built, for tests: one per interval, whatever the streams
        _broadcasts.add(self)

    @property
    def streams(self) -> int:
        return len(self._streams)

    @property
    def running(self) -> bool:
        """Whether the producer thread runs (it does while a stream is open)."""
        return self._thread is not None

    def subscribe(self, stream: Stream) -> None:
        """Add ``stream``; it gets the newest frame at once if the producer is running."""
        with self._lock:
            if len(self._streams) >= self._max_streams:
                raise StreamsFullError(f"{self._max_streams} event streams are open already")
            self._streams.add(stream)
            if self._thread is not None:
                if self._latest is not None:
                    stream.offer(self._latest)
                return
            self._latest = None
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def unsubscribe(self, stream: Stream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def end_streams(self) -> None:
        """Close every open stream (the server is stopping); the producer then ends."""
        with self._lock:
            streams, self._streams = list(self._streams), set()
            self._wake.set()
        for stream in streams:
            stream.close()

    def _run(self) -> None:
        while True:
            started = self._clock()
            with self._lock:
                self._wake.clear()
                if not self._streams:
                    self._thread = None
                    return
            frame = self._frame()
            with self._lock:
                if frame is not None:
                    self._latest = frame
                streams = list(self._streams)
            if frame is not None:
                for stream in streams:
                    stream.offer(frame)
            self._wake.wait(max(0.0, self._interval - (self._clock() - started)))

    def _frame(self) -> bytes | None:
        try:
            frame = self._build()
        except Exception:  # the producer outlives one bad frame
            logger.exception("celery-observe: building a dashboard frame failed")
            return None
        self.frames += 1
        return frame


def end_streams() -> None:
    """Close the open event streams of every broadcast in this process.

    A server that stops waits for open responses to finish; an event stream never does,
    so ``observe serve`` calls this first, and SIGTERM is not held up by open pages.
    """
    for broadcast in list(_broadcasts):
        broadcast.end_streams()


__all__ = ["Broadcast", "Stream", "StreamsFullError", "end_streams", "sse_event"]
