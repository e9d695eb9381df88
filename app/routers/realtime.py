"""WebSocket /realtime: authenticates, reads client requests, and runs the connection's writer."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app import protocol
from app.deps import ServicesDep
from app.services.auth import ANONYMOUS, AuthError, Principal
from app.services.container import Services
from app.services.subscribers import CloseFrame, Subscriber
from app.services.tables import TableStatus

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009


@router.websocket("/realtime")
async def realtime_socket(websocket: WebSocket, services: ServicesDep) -> None:
    await websocket.accept()
    client = f"{websocket.client.host}:{websocket.client.port}" if websocket.client else ""
    principal = _authenticate(websocket, services)
    if isinstance(principal, AuthError):
        await websocket.send_text(protocol.encode_error(str(principal)))
        await websocket.close(CLOSE_POLICY_VIOLATION, "invalid token")
        return
    subscriber = services.hub.connect(principal, client)
    writer = asyncio.create_task(_write_frames(websocket, subscriber))
    try:
        await _serve_requests(websocket, subscriber, services)
    finally:
        for replay in list(subscriber.replays.values()):
            replay.cancel()
        services.hub.disconnect(subscriber)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


def _authenticate(websocket: WebSocket, services: Services) -> Principal | AuthError:
    token = websocket.query_params.get("token")
    if not token:
        return ANONYMOUS
    try:
        return services.verifier.verify(token)
    except AuthError as error:
        return error


async def _write_frames(websocket: WebSocket, subscriber: Subscriber) -> None:
    """The connection's only sender: frames leave in the order they were queued."""
    try:
        while True:
            frame = await subscriber.next_frame()
            if isinstance(frame, CloseFrame):
                await websocket.close(frame.code, frame.reason)
                return
            await websocket.send_text(frame)
    except (WebSocketDisconnect, RuntimeError):
        return  # the client went away; the reader sees the disconnect and cleans up


async def _serve_requests(websocket: WebSocket, subscriber: Subscriber, services: Services) -> None:
    hub = services.hub
    limit = services.settings.realtime_max_message_bytes
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if subscriber.closing:
            continue  # a close is on its way; requests after it are moot
        text = message.get("text")
        if text is None:
            hub.offer_to(
                [subscriber], protocol.encode_error("binary frames are not supported: send JSON text")
            )
            continue
        # len() counts characters; only encode when the text could be over the limit in UTF-8 bytes.
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            hub.offer_to([subscriber], protocol.encode_error(f"message is larger than {limit} bytes"))
            subscriber.close(CLOSE_MESSAGE_TOO_BIG, "message too big")
            continue
        try:
            request = protocol.parse_client_message(text)
        except protocol.ProtocolError as error:
            hub.offer_to([subscriber], protocol.encode_error(str(error), ref=error.ref))
            continue
        await _answer(request, subscriber, services)


async def _answer(request: protocol.ChannelRequest, subscriber: Subscriber, services: Services) -> None:
    hub = services.hub
    name = request.channel.name
    if request.type == "unsubscribe":
        _stop_replay(subscriber, name)
        if hub.unsubscribe(subscriber, name):
            hub.offer_to([subscriber], protocol.encode_ack(name, request.ref))
        else:
            hub.offer_to(
                [subscriber],
                protocol.encode_error(f"not subscribed to {name}", ref=request.ref, channel=name),
            )
        return
    refusal = await _refusal(request, services)
    if refusal is not None:
        hub.offer_to([subscriber], refusal)
        return
    if request.since is None and hub.is_live(subscriber, name):
        hub.offer_to([subscriber], protocol.encode_ack(name, request.ref))  # subscribing twice is harmless
        return
    _stop_replay(subscriber, name)
    # Out of live delivery until the subscription has caught up with the feed, or a change could arrive
    # twice; the ack goes first, then anything replayed, then live changes.
    hub.unsubscribe(subscriber, name)
    subscriber.channels.add(name)
    hub.offer_to([subscriber], protocol.encode_ack(name, request.ref))
    if request.since is None:
        # Exactly the changes numbered after this subscribe: not those committed before it that the feed
        # has yet to publish. Usually the feed is there already and this returns without waiting.
        try:
            await services.replayer.join(subscriber, request.channel, await services.feed.sequence())
        except Exception:
            log.exception("subscribe_failed channel=%s", name)
            _abandon(subscriber, name, services, "subscribe failed (the database is unavailable): try again")
        return
    replay = asyncio.create_task(services.replayer.replay(subscriber, request.channel, request.since))
    subscriber.replays[name] = replay
    replay.add_done_callback(lambda task: _replay_ended(task, subscriber, name, services))


def _stop_replay(subscriber: Subscriber, channel: str) -> None:
    replay = subscriber.replays.pop(channel, None)
    if replay is not None:
        replay.cancel()


def _replay_ended(task: asyncio.Task[None], subscriber: Subscriber, channel: str, services: Services) -> None:
    if subscriber.replays.get(channel) is task:
        del subscriber.replays[channel]
    if task.cancelled() or task.exception() is None:
        return
    log.error("replay_failed channel=%s", channel, exc_info=task.exception())
    _abandon(
        subscriber,
        channel,
        services,
        "replay failed (the database is unavailable): subscribe again with the same since",
    )


def _abandon(subscriber: Subscriber, channel: str, services: Services, reason: str) -> None:
    """Neither replaying nor live: drop the subscription and say so, so that the client subscribes again."""
    services.hub.unsubscribe(subscriber, channel)
    services.hub.offer_to(
        [subscriber], protocol.encode_error(reason, channel=channel, code="subscribe_failed")
    )


async def _refusal(request: protocol.ChannelRequest, services: Services) -> str | None:
    """The error that refuses this subscribe, or None."""
    channel = request.channel
    name = channel.name
    try:
        status = await services.tables.status(channel)
    except Exception:
        log.exception("table_status_failed")
        return protocol.encode_error(
            "could not check the table: the database is unavailable, try again", ref=request.ref, channel=name
        )
    table = f"{channel.schema}.{channel.table}"
    if status is TableStatus.MISSING:
        return protocol.encode_error(f"table {table} does not exist", ref=request.ref, channel=name)
    if status is TableStatus.DISABLED:
        return protocol.encode_error(
            f"realtime is not enabled on table {table}: run SELECT enable_realtime(schema, table)",
            ref=request.ref,
            channel=name,
        )
    if status is TableStatus.PROTECTED:
        return protocol.encode_error(
            f"table {table} has row-level security, which this server does not enforce per subscriber yet: "
            "subscriptions to it are refused so that no row leaks",
            ref=request.ref,
            channel=name,
        )
    return None
