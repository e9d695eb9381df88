"""A connection starts its writer task only when a subscriber has something queued (Subscriber.attach's
`on_backlog`), so that an idle connection runs none."""

from __future__ import annotations

import asyncio

from app.services.auth import ANONYMOUS
from app.services.hub import Hub
from app.services.subscribers import CloseFrame, Subscriber
from app.wire import text_frame
from tests.support.writers import RecordingWriter

TIMEOUT = 5.0


def attached(capacity: int = 8) -> tuple[Subscriber, RecordingWriter, list[None]]:
    subscriber = Subscriber(ANONYMOUS, capacity=capacity)
    writer, calls = RecordingWriter(), []
    subscriber.attach(writer, lambda: calls.append(None))  # type: ignore[arg-type]
    return subscriber, writer, calls


def test_a_direct_write_needs_no_writer() -> None:
    subscriber, writer, calls = attached()
    assert subscriber.offer("a", text_frame("a"))
    assert writer.writes == [text_frame("a")] and calls == [] and not subscriber.backlog


def test_a_queued_frame_or_a_close_asks_for_a_writer() -> None:
    subscriber, writer, calls = attached()
    assert subscriber.offer("ack")  # no wire bytes: always queued
    assert calls == [None] and subscriber.backlog
    writer.open = False  # a paused transport: broadcasts queue too
    assert subscriber.offer("b", text_frame("b"))
    assert len(calls) == 2  # the connection ignores the call while its writer runs
    subscriber.close(1001)
    assert len(calls) == 3


def test_a_batch_that_cannot_be_written_asks_for_a_writer() -> None:
    hub = Hub(send_queue_size=8, slow_client_timeout=0.1)
    subscriber = hub.connect(ANONYMOUS)
    writer, calls = RecordingWriter(), []
    subscriber.attach(writer, lambda: calls.append(None))  # type: ignore[arg-type]
    hub.subscribe(subscriber, "table:public.t")
    writer.open = False
    with hub.batch():
        hub.publish("table:public.t", "1")
        hub.publish("table:public.t", "2")
        assert calls == []
    assert calls == [None] and subscriber.room == 6


async def test_a_writer_that_drains_the_queue_sees_no_backlog_then_a_close() -> None:
    subscriber, _, calls = attached()
    subscriber.offer("a")
    subscriber.offer("b")
    subscriber.close(1008, "token expired")
    frames = []
    while subscriber.backlog:
        frame = await asyncio.wait_for(subscriber.next_frame(), TIMEOUT)
        frames.append(frame)
        if isinstance(frame, CloseFrame):
            break
        subscriber.sent()
    assert frames == ["a", "b", CloseFrame(1008, "token expired")]
    assert len(calls) == 3  # one per queueing; the connection starts one writer for all of them


async def test_a_waiting_writer_is_woken_instead() -> None:
    subscriber, _, calls = attached()
    waiting = asyncio.create_task(subscriber.next_frame())
    await asyncio.sleep(0)
    subscriber.offer("a")
    assert await asyncio.wait_for(waiting, TIMEOUT) == "a"
    assert calls == []
