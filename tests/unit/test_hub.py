"""Subscriber queues and the hub's channel bookkeeping, without sockets."""

from __future__ import annotations

import asyncio

import pytest

from app.protocol import HEARTBEAT
from app.services.auth import ANONYMOUS
from app.services.hub import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER, Hub
from app.services.subscribers import CloseFrame, Subscriber
from app.wire import text_frame
from tests.support.writers import RecordingWriter

TIMEOUT = 5.0  # generous: only bounds a broken test, never measures anything
CHANNEL = "table:public.products"
OTHER = "table:public.orders"
QUEUE = 8


async def take(subscriber: Subscriber, count: int) -> list[str | CloseFrame]:
    return [await asyncio.wait_for(subscriber.next_frame(), TIMEOUT) for _ in range(count)]


async def yield_a_few() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def make_hub(queue_size: int = QUEUE) -> Hub:
    return Hub(send_queue_size=queue_size, slow_client_timeout=0.1)


# --- Subscriber ------------------------------------------------------------------------------------------


async def test_offer_beyond_capacity_returns_false() -> None:
    subscriber = Subscriber(ANONYMOUS, capacity=2)
    assert subscriber.offer("a") and subscriber.offer("b")
    assert subscriber.room == 0
    assert subscriber.offer("c") is False
    assert await take(subscriber, 2) == ["a", "b"]
    assert subscriber.offer("d") is True


async def test_frames_come_out_in_order() -> None:
    subscriber = Subscriber(ANONYMOUS, capacity=100)
    frames = [f"frame-{i}" for i in range(50)]
    for frame in frames:
        assert subscriber.offer(frame)
    assert await take(subscriber, 50) == frames


async def test_close_after_frames_sends_frames_then_close() -> None:
    subscriber = Subscriber(ANONYMOUS, capacity=10)
    subscriber.offer("a")
    subscriber.offer("b")
    subscriber.close(1000, "bye")
    assert subscriber.closing
    assert subscriber.offer("c") is False
    assert await take(subscriber, 3) == ["a", "b", CloseFrame(1000, "bye")]
    # Once drained it keeps answering with the close frame.
    assert await take(subscriber, 1) == [CloseFrame(1000, "bye")]


async def test_close_dropping_pending_sends_close_first() -> None:
    subscriber = Subscriber(ANONYMOUS, capacity=10)
    subscriber.offer("a")
    subscriber.offer("b")
    subscriber.close(1008, "policy", drop_pending=True)
    assert await take(subscriber, 1) == [CloseFrame(1008, "policy")]


async def test_first_close_wins() -> None:
    subscriber = Subscriber(ANONYMOUS, capacity=10)
    subscriber.close(1013, "slow", drop_pending=True)
    subscriber.close(1001, "shutdown", drop_pending=True)
    assert await take(subscriber, 1) == [CloseFrame(1013, "slow")]


async def test_next_frame_waits_for_an_offer() -> None:
    subscriber = Subscriber(ANONYMOUS, capacity=10)
    waiting = asyncio.create_task(asyncio.wait_for(subscriber.next_frame(), TIMEOUT))
    await yield_a_few()
    assert not waiting.done()
    subscriber.offer("hello")
    assert await waiting == "hello"


async def test_next_frame_waits_for_a_close() -> None:
    subscriber = Subscriber(ANONYMOUS, capacity=10)
    waiting = asyncio.create_task(asyncio.wait_for(subscriber.next_frame(), TIMEOUT))
    await yield_a_few()
    assert not waiting.done()
    subscriber.close(1000)
    assert await waiting == CloseFrame(1000, "")


# --- Hub -------------------------------------------------------------------------------------------------


async def test_publish_shares_one_frame_object_and_skips_other_channels() -> None:
    hub = make_hub()
    first, second, other, idle = (hub.connect(ANONYMOUS, f"c{i}") for i in range(4))
    hub.subscribe(first, CHANNEL)
    hub.subscribe(second, CHANNEL)
    hub.subscribe(other, OTHER)
    frame = "".join(["{", '"change":1', "}"])  # built at runtime: not an interned constant
    hub.publish(CHANNEL, frame)
    hub.publish("table:public.nobody", "ignored")
    for subscriber in (first, second):
        [received] = await take(subscriber, 1)
        assert received is frame
    assert other.room == QUEUE
    assert idle.room == QUEUE
    assert hub.has_subscribers(CHANNEL) and not hub.has_subscribers("table:public.nobody")


async def test_subscribe_is_idempotent() -> None:
    hub = make_hub()
    subscriber = hub.connect(ANONYMOUS)
    hub.subscribe(subscriber, CHANNEL)
    hub.subscribe(subscriber, CHANNEL)
    hub.publish(CHANNEL, "once")
    assert subscriber.room == QUEUE - 1
    assert hub.channel_count == 1


async def test_unsubscribe() -> None:
    hub = make_hub()
    subscriber = hub.connect(ANONYMOUS)
    assert hub.unsubscribe(subscriber, CHANNEL) is False
    hub.subscribe(subscriber, CHANNEL)
    assert hub.unsubscribe(subscriber, OTHER) is False
    assert hub.channel_count == 1
    assert hub.unsubscribe(subscriber, CHANNEL) is True
    assert hub.unsubscribe(subscriber, CHANNEL) is False
    hub.publish(CHANNEL, "nobody hears this")
    assert subscriber.room == QUEUE
    assert subscriber.channels == set()


async def test_channel_count_drops_when_the_last_subscriber_leaves() -> None:
    hub = make_hub()
    a, b = hub.connect(ANONYMOUS), hub.connect(ANONYMOUS)
    hub.subscribe(a, CHANNEL)
    hub.subscribe(b, CHANNEL)
    hub.subscribe(b, OTHER)
    assert hub.channel_count == 2
    hub.unsubscribe(a, CHANNEL)
    assert hub.channel_count == 2
    hub.disconnect(b)
    assert hub.channel_count == 0
    assert not hub.has_subscribers(CHANNEL)
    assert hub.connection_count == 1
    hub.disconnect(a)
    assert hub.connection_count == 0


async def test_subscribe_after_disconnect_is_ignored() -> None:
    hub = make_hub()
    subscriber = hub.connect(ANONYMOUS)
    hub.disconnect(subscriber)
    hub.subscribe(subscriber, CHANNEL)
    assert hub.channel_count == 0


async def test_overflow_closes_the_slow_subscriber_once() -> None:
    hub = make_hub(queue_size=2)
    slow, fast = hub.connect(ANONYMOUS, "slow"), hub.connect(ANONYMOUS, "fast")
    for subscriber in (slow, fast):
        hub.subscribe(subscriber, CHANNEL)
        hub.subscribe(subscriber, OTHER)
    hub.publish(CHANNEL, "1")
    hub.publish(CHANNEL, "2")
    assert await take(fast, 2) == ["1", "2"]
    assert hub.slow_consumer_disconnects == 0

    hub.publish(CHANNEL, "3")  # slow's queue is full
    assert hub.slow_consumer_disconnects == 1
    assert slow.closing
    assert slow.channels == set()
    assert hub.connection_count == 2
    assert await take(fast, 1) == ["3"]

    for frame in ("4", "5"):
        hub.publish(CHANNEL, frame)
        hub.publish(OTHER, frame)
        assert await take(fast, 2) == [frame, frame]
    hub.offer_to([slow], "direct")
    assert hub.slow_consumer_disconnects == 1
    assert await take(slow, 1) == [CloseFrame(CLOSE_TRY_AGAIN_LATER, "client is not reading fast enough")]

    hub.disconnect(fast)
    assert hub.channel_count == 0  # slow is in no channel any more
    assert hub.connection_count == 1
    hub.disconnect(slow)
    assert hub.connection_count == 0


async def test_close_all_closes_every_subscriber_at_once() -> None:
    hub = make_hub()
    subscribers = [hub.connect(ANONYMOUS) for _ in range(3)]
    hub.subscribe(subscribers[0], CHANNEL)
    hub.publish(CHANNEL, "pending")
    hub.close_all()
    for subscriber in subscribers:
        assert await take(subscriber, 1) == [CloseFrame(CLOSE_GOING_AWAY, "server shutting down")]


async def test_heartbeats_reach_connected_subscribers() -> None:
    hub = make_hub()
    subscriber = hub.connect(ANONYMOUS)  # no channel needed: heartbeats go to every connection
    heartbeats = asyncio.create_task(hub.run_heartbeats(0.01))
    try:
        assert await asyncio.wait_for(subscriber.next_frame(), TIMEOUT) == HEARTBEAT
    finally:
        heartbeats.cancel()
        with pytest.raises(asyncio.CancelledError):
            await heartbeats


# --- Batches: one socket write per subscriber ------------------------------------------------------------


def direct_subscriber(hub: Hub, *channels: str) -> tuple[Subscriber, RecordingWriter]:
    subscriber = hub.connect(ANONYMOUS)
    writer = RecordingWriter()
    subscriber.attach(writer)  # type: ignore[arg-type]
    for channel in channels:
        hub.subscribe(subscriber, channel)
    return subscriber, writer


async def test_a_batch_is_one_write_per_subscriber_in_publish_order() -> None:
    hub = make_hub()
    (_, both), (_, one) = direct_subscriber(hub, CHANNEL, OTHER), direct_subscriber(hub, OTHER)
    with hub.batch():
        hub.publish(CHANNEL, "1")
        hub.publish(OTHER, "2")
        hub.publish(CHANNEL, "3")
        assert both.writes == one.writes == []  # held until the batch ends
    assert both.writes == [text_frame("1") + text_frame("2") + text_frame("3")]
    assert one.writes == [text_frame("2")]
    hub.publish(OTHER, "4")  # outside a batch: written at once
    assert one.writes == [text_frame("2"), text_frame("4")]


async def test_a_batch_the_socket_cannot_take_is_queued_in_order() -> None:
    hub = make_hub()
    subscriber, writer = direct_subscriber(hub, CHANNEL)
    with hub.batch():
        hub.publish(CHANNEL, "1")
        hub.publish(CHANNEL, "2")
        writer.open = False
    assert writer.writes == []
    hub.publish(CHANNEL, "3")  # behind the queued frames, not around them
    assert await take(subscriber, 3) == ["1", "2", "3"]


async def test_a_queued_frame_inside_a_batch_goes_behind_the_held_ones() -> None:
    hub = make_hub()
    subscriber, writer = direct_subscriber(hub, CHANNEL)
    with hub.batch():
        hub.publish(CHANNEL, "1")
        hub.offer_to([subscriber], "reply")  # no wire bytes: it must take the queue
        hub.publish(CHANNEL, "2")
    assert writer.writes == []
    assert await take(subscriber, 3) == ["1", "reply", "2"]


async def test_a_subscriber_closed_in_a_batch_gets_nothing_more_of_it() -> None:
    hub = make_hub(queue_size=1)
    subscriber, writer = direct_subscriber(hub, CHANNEL)
    with hub.batch():
        hub.publish(CHANNEL, "1")
        subscriber.close(CLOSE_GOING_AWAY, drop_pending=True)
        hub.publish(CHANNEL, "2")
    assert writer.writes == []
    assert await take(subscriber, 1) == [CloseFrame(CLOSE_GOING_AWAY)]


async def test_a_turns_live_frames_are_one_write_per_subscriber_when_the_turn_ends() -> None:
    hub = make_hub()
    (first, one), (second, two) = direct_subscriber(hub), direct_subscriber(hub)
    hub.offer_live([first, second], "1")
    hub.offer_live([second], "2")
    hub.offer_live([first, second], "3")
    assert one.writes == two.writes == []  # held until the loop turn ends
    await yield_a_few()
    assert one.writes == [text_frame("1") + text_frame("3")]
    assert two.writes == [text_frame("1") + text_frame("2") + text_frame("3")]
    hub.offer_live([first], "4")  # a later turn: a write of its own
    await yield_a_few()
    assert one.writes == [text_frame("1") + text_frame("3"), text_frame("4")]


async def test_a_direct_frame_offered_while_live_frames_are_held_goes_behind_them() -> None:
    hub = make_hub()
    subscriber, writer = direct_subscriber(hub, CHANNEL)
    hub.offer_live([subscriber], "1")
    hub.publish(CHANNEL, "2")  # outside any batch, a frame that would be written at once
    hub.offer_to([subscriber], HEARTBEAT, text_frame(HEARTBEAT))
    assert writer.writes == []
    await yield_a_few()
    assert writer.writes == [text_frame("1") + text_frame("2") + text_frame(HEARTBEAT)]


async def test_a_reply_offered_while_live_frames_are_held_goes_behind_them() -> None:
    hub = make_hub()
    subscriber, writer = direct_subscriber(hub)
    hub.offer_live([subscriber], "1")
    hub.offer_to([subscriber], "ack")  # no wire bytes: it must take the queue
    hub.offer_live([subscriber], "2")
    await yield_a_few()
    assert writer.writes == []
    assert await take(subscriber, 3) == ["1", "ack", "2"]


async def test_live_frames_offered_inside_a_batch_are_written_with_it() -> None:
    hub = make_hub()
    subscriber, writer = direct_subscriber(hub, CHANNEL)
    with hub.batch():
        hub.publish(CHANNEL, "1")
        hub.offer_live([subscriber], "2")
    assert writer.writes == [text_frame("1") + text_frame("2")]
    await yield_a_few()
    assert writer.writes == [text_frame("1") + text_frame("2")]


async def test_live_frames_for_a_subscriber_closed_meanwhile_are_dropped() -> None:
    hub = make_hub()
    subscriber, writer = direct_subscriber(hub)
    hub.offer_live([subscriber], "1")
    subscriber.close(CLOSE_GOING_AWAY, drop_pending=True)
    hub.offer_live([subscriber], "2")
    await yield_a_few()
    assert writer.writes == []
    assert await take(subscriber, 1) == [CloseFrame(CLOSE_GOING_AWAY)]


async def test_sustained_live_frames_are_held_until_the_flush_interval_then_written_together() -> None:
    # A long interval, so that the flushes below are always within it of each other, however slow the
    # machine: only the order of events is asserted.
    hub = Hub(send_queue_size=QUEUE, slow_client_timeout=0.1, broadcast_flush_interval=1.0)
    subscriber, writer = direct_subscriber(hub)
    for frame in ("1", "2", "3"):  # the first flush, then two within the interval: at each turn's end
        hub.offer_live([subscriber], frame)
        await yield_a_few()
    assert writer.writes == [text_frame("1"), text_frame("2"), text_frame("3")]
    hub.offer_live([subscriber], "4")  # sustained: held past the turn
    await yield_a_few()
    hub.offer_live([subscriber], "5")
    await yield_a_few()
    assert len(writer.writes) == 3
    async with asyncio.timeout(TIMEOUT):
        while len(writer.writes) == 3:  # noqa: ASYNC110 - waits for the paced flush, measures nothing
            await asyncio.sleep(0.01)
    assert writer.writes[3:] == [text_frame("4") + text_frame("5")]


async def test_a_feed_batch_published_while_live_frames_are_held_goes_behind_them() -> None:
    hub = make_hub()
    subscriber, writer = direct_subscriber(hub, CHANNEL)
    hub.offer_live([subscriber], "1")
    with hub.batch():
        hub.publish(CHANNEL, "2")
        hub.publish(CHANNEL, "3")
    assert writer.writes == []  # not around the held broadcast
    await yield_a_few()
    assert writer.writes == [text_frame("1") + text_frame("2") + text_frame("3")]
