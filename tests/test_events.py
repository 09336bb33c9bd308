"""The dashboard's event broadcast: one frame per interval for every open stream, bounded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from celery_observe.cluster.api.events import (
    HEARTBEAT,
    RETRY_MS,
    Broadcast,
    Stream,
    StreamsFullError,
    sse_event,
)
from celery_observe.testing import wait_until


def counting_build() -> tuple[Callable[[], bytes], list[int]]:
    """A frame builder that numbers its frames, and the list of those numbers."""
    built: list[int] = []
    lock = threading.Lock()

    def build() -> bytes:
        with lock:
            built.append(len(built) + 1)
            return sse_event("snapshot", str(built[-1]), built[-1])

    return build, built


async def take(messages: AsyncIterator[bytes], count: int) -> list[bytes]:
    return [await messages.__anext__() for _ in range(count)]


def test_sse_event_has_one_data_line_per_line() -> None:
    """An event is its name, its id and a data: line per line, ended by a blank line."""
    assert sse_event("snapshot", '{"a":1}\n{"b":2}', 7) == (
        b'event: snapshot\nid: 7\ndata: {"a":1}\ndata: {"b":2}\n\n')
    assert sse_event("heartbeat", "") == b"event: heartbeat\ndata: \n\n"


def test_fifty_streams_cost_one_frame_and_a_late_one_gets_it_without_another() -> None:
    """50 streams opened together get frame 1 from one build; a 51st gets the same frame."""
    build, built = counting_build()

    async def run() -> list[list[bytes]]:
        broadcast = Broadcast(build, interval=30)
        loop = asyncio.get_running_loop()
        streams = [Stream(loop) for _ in range(50)]
        for stream in streams:
            broadcast.subscribe(stream)
        first = await asyncio.gather(*(take(s.messages(), 2) for s in streams))
        late = Stream(loop)
        broadcast.subscribe(late)
        first.append(await take(late.messages(), 2))
        broadcast.end_streams()
        return first

    received = asyncio.run(run())
    assert built == [1]
    assert received == [[f"retry: {RETRY_MS}\n\n".encode(), sse_event("snapshot", "1", 1)]] * 51


def test_a_stream_that_is_not_read_holds_only_the_newest_frame() -> None:
    """A page that reads nothing for 20 frames has one frame waiting; 19 were skipped."""
    build, built = counting_build()

    async def run() -> tuple[int, list[bytes]]:
        broadcast = Broadcast(build, interval=0.02)
        stream = Stream(asyncio.get_running_loop())
        broadcast.subscribe(stream)
        while len(built) < 20:
            await asyncio.sleep(0.005)
        broadcast.unsubscribe(stream)
        while broadcast.running:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)  # the last hand-over, queued into this loop
        return stream.skipped, await take(stream.messages(), 2)

    skipped, pending = asyncio.run(run())
    assert skipped == len(built) - 1
    assert pending[1:] == [sse_event("snapshot", str(len(built)), len(built))]


def test_the_producer_stops_after_the_last_stream_and_starts_again() -> None:
    """No open stream: no thread and no frames; a new stream starts it with a fresh frame."""
    build, built = counting_build()

    async def run() -> None:
        broadcast = Broadcast(build, interval=0.05)
        stream = Stream(asyncio.get_running_loop())
        broadcast.subscribe(stream)
        await take(stream.messages(), 2)
        broadcast.unsubscribe(stream)
        while broadcast.running:
            await asyncio.sleep(0.01)
        stopped_at = len(built)
        await asyncio.sleep(0.2)
        assert len(built) == stopped_at
        again = Stream(asyncio.get_running_loop())
        broadcast.subscribe(again)
        frame = (await take(again.messages(), 2))[1]
        broadcast.end_streams()
        assert frame == sse_event("snapshot", str(stopped_at + 1), stopped_at + 1)

    asyncio.run(run())


def test_a_quiet_stream_sends_heartbeats() -> None:
    """Without frames, a stream sends a heartbeat event every heartbeat seconds."""
    async def run() -> list[bytes]:
        return await take(Stream(asyncio.get_running_loop()).messages(heartbeat=0.01), 3)

    assert asyncio.run(run())[1:] == [HEARTBEAT, HEARTBEAT]


def test_streams_beyond_the_limit_are_refused() -> None:
    """The third stream of a broadcast for two raises StreamsFullError."""
    build, _ = counting_build()

    async def run() -> None:
        broadcast = Broadcast(build, interval=30, max_streams=2)
        loop = asyncio.get_running_loop()
        broadcast.subscribe(Stream(loop))
        broadcast.subscribe(Stream(loop))
        with pytest.raises(StreamsFullError, match="2 event streams are open already"):
            broadcast.subscribe(Stream(loop))
        broadcast.end_streams()

    asyncio.run(run())


def test_a_failing_build_is_logged_and_the_producer_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """A frame that raises is skipped and logged; the next frame is built and sent."""
    calls: list[int] = []

    def build() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected")
        return sse_event("snapshot", "ok")

    async def run() -> bytes:
        broadcast = Broadcast(build, interval=0.02)
        stream = Stream(asyncio.get_running_loop())
        broadcast.subscribe(stream)
        frame = (await take(stream.messages(), 2))[1]
        broadcast.end_streams()
        return frame

    assert asyncio.run(run()) == sse_event("snapshot", "ok")
    wait_until(lambda: caplog.records, 5, "the log line")
    assert [r.getMessage() for r in caplog.records] == [
        "celery-observe: building a dashboard frame failed"]
