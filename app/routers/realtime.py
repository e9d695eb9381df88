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
        hub.offer_to([subscriber], await _answer(request, subscriber, services))


async def _answer(request: protocol.ChannelRequest, subscriber: Subscriber, services: Services) -> str:
    channel = request.channel
    name = channel.name
    if request.type == "unsubscribe":
        if services.hub.unsubscribe(subscriber, name):
            return protocol.encode_ack(name, request.ref)
        return protocol.encode_error(f"not subscribed to {name}", ref=request.ref, channel=name)
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
    services.hub.subscribe(subscriber, name)
    return protocol.encode_ack(name, request.ref)
