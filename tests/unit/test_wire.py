"""Frames built once for every subscriber must be exactly what websockets itself would send; the light
stand-ins for uvicorn's per-connection queue and event behave as those did."""

from __future__ import annotations

import asyncio

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from app.wire import Inbox, WritableFlag, text_frame


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 1_000_000])
def test_text_frames_of_every_length_class_parse_back(size: int) -> None:
    payload = ("é" if size % 2 else "x") * (size // 2 if size % 2 else size)
    frame = parse(text_frame(payload))
    assert frame.opcode is Opcode.TEXT and frame.fin
    assert frame.data.decode() == payload


def test_the_frame_matches_what_websockets_serializes() -> None:
    payload = '{"type":"heartbeat"}'
    expected = Frame(Opcode.TEXT, payload.encode()).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


async def test_the_inbox_is_a_fifo_until_a_receiver_takes_over_in_order() -> None:
    inbox = Inbox()
    assert inbox.empty()
    inbox.put_nowait({"type": "websocket.connect"})
    assert await inbox.get() == {"type": "websocket.connect"}
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait({"type": "websocket.receive", "text": "1"})
    assert await asyncio.wait_for(waiting, 5) == {"type": "websocket.receive", "text": "1"}
    inbox.put_nowait({"type": "websocket.receive", "text": "2"})
    inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    assert not inbox.empty()
    received: list[dict[str, object]] = []
    inbox.attach(received.append)
    inbox.put_nowait({"type": "websocket.receive", "text": "3"})
    assert received == [
        {"type": "websocket.receive", "text": "2"},
        {"type": "websocket.disconnect", "code": 1000},
        {"type": "websocket.receive", "text": "3"},
    ]
    assert inbox.empty()


async def test_the_writable_flag_releases_every_waiter_when_set() -> None:
    flag = WritableFlag()
    assert flag.is_set() and await flag.wait()
    flag.clear()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [True, True]
    # A waiter cancelled while the transport is paused leaves nothing behind.
    flag.clear()
    cancelled = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    flag.set()
    assert flag.is_set()
