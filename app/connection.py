"""One served WebSocket connection: its requests, its outgoing frames, its token's expiry and refresh.

The connection parses what the client sends, applies the limits every message is subject to, and hands
each request to the kind of channel it names (app/channels/); it never knows what a channel holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from fastapi import WebSocket, WebSocketDisconnect

from app import protocol
from app.services import traffic
from app.services.auth import AuthError, Principal
from app.services.container import Services
from app.services.limits import Admission, ConnectionLease, ExpiryTimer, MessageRate
from app.services.subscribers import CloseFrame
from app.services.views import subscription_key
from app.wire import Event, FrameWriter

log = logging.getLogger(__name__)

CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009


class Socket(Protocol):
    """What a connection needs of its socket: app.wire.FrameWriter, or AsgiSocket."""

    async def send_text(self, text: str) -> None: ...
    async def close(self, code: int, reason: str = "") -> None: ...
    def resume_reading(self) -> None: ...
    def abort(self) -> None: ...


class AsgiSocket:
    """The socket through ASGI, for a server that is not app.wire's (no direct path, no detaching)."""

    __slots__ = ("_websocket",)

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def send_text(self, text: str) -> None:
        await self._websocket.send_text(text)

    async def close(self, code: int, reason: str = "") -> None:
        await self._websocket.close(code, reason)

    def resume_reading(self) -> None:
        pass  # receive() reads on

    def abort(self) -> None:
        pass  # Connection.serve returns, and the server closes the connection


class Connection:
    """One served WebSocket connection: it answers the client's requests and sends the subscriber's queued
    frames, each with a task that exists only while there is work, so that an idle connection runs none
    (broadcasts to an idle socket are written directly, app.wire; heartbeats too).

    Requests are answered one at a time, in order: reading pauses after each message, and resumes once
    every message received has been taken. When the socket is gone, whatever it still had to say is moot:
    pending requests are dropped, and the connection is cleaned up once the request being answered (if
    any) is done.
    """

    __slots__ = (
        "_expiry",
        "_gone",
        "_inbound",
        "_lease",
        "_rate",
        "_requests",
        "_services",
        "_socket",
        "_writer",
        "subscriber",
    )

    def __init__(
        self,
        socket: Socket,
        direct: FrameWriter | None,
        services: Services,
        principal: Principal,
        client: str,
        lease: ConnectionLease,
    ) -> None:
        self._socket = socket
        self._services = services
        self._lease: ConnectionLease | None = lease
        self._rate = MessageRate(services.settings.realtime_max_messages_per_second)
        self._inbound: deque[Event] | None = None
        self._requests: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._gone = False
        self._expiry: ExpiryTimer | None = None  # only for a token with an expiry
        # The subscriber counts as a connection from here on; nothing after this can fail.
        self.subscriber = services.hub.connect(principal, client)
        self.subscriber.attach(direct, self._start_writer)
        self.schedule_expiry(principal)

    def schedule_expiry(self, principal: Principal) -> None:
        """(Re)arm the expiry timer for the principal's token (disarm it for a token without `exp`)."""
        expires_at = self._services.verifier.expires_at(principal)
        if self._expiry is None:
            if expires_at is None:
                return
            self._expiry = ExpiryTimer(self._expired)
        self._expiry.schedule(expires_at)

    def _expired(self) -> None:
        """The token expired before an access_token replaced it: an error, then close 1008."""
        subscriber = self.subscriber
        if subscriber.closing:
            return
        error = protocol.encode_error(
            "the token has expired: send a new one with an access_token message before it expires, "
            "or reconnect with a new token",
            code="token_expired",
        )
        # Frames already queued were authorized while the token was valid and go first; a queue too full
        # to take the error means a client too slow to matter: it gets the close at once.
        delivered = subscriber.offer(error)
        subscriber.close(CLOSE_POLICY_VIOLATION, "token expired", drop_pending=not delivered)

    # Requests

    def receive(self, event: Event) -> None:
        """A message or the disconnect (app.wire.Receiver: called inside the protocol's callbacks, so it
        only takes note and leaves the work to a task)."""
        if self._gone:
            return
        kind = event["type"]
        if kind == "websocket.disconnect":
            self._gone = True
            self._inbound = None
            if self._requests is None:
                asyncio.get_running_loop().call_soon(self._close)
        elif kind == "websocket.receive":
            if self._inbound is None:
                self._inbound = deque()
            self._inbound.append(event)
            if self._requests is None:
                self._requests = asyncio.get_running_loop().create_task(self._answer_requests())

    async def _answer_requests(self) -> None:
        try:
            while self._inbound and not self._gone:
                message = self._inbound.popleft()
                if not self._inbound:
                    self._socket.resume_reading()
                await self._handle(message)
        except Exception:
            # As uvicorn does when an ASGI application fails: log it and drop the connection.
            log.exception("request_failed client=%s", self.subscriber.client)
            self._gone = True
            self._socket.abort()
        finally:
            self._requests = None
            self._inbound = None
            if self._gone:
                self._close()

    async def serve(self, websocket: WebSocket) -> None:
        """Serve the connection from this (ASGI) task: each event in turn, each request answered before
        the next message is read."""
        try:
            while not self._gone:
                self.receive(dict(await websocket.receive()))
                if self._requests is not None:
                    await self._requests
        finally:
            self._gone = True
            self._close()

    def _reply(self, frame: str) -> None:
        self._services.hub.offer_to([self.subscriber], frame)

    async def _handle(self, message: Event) -> None:
        subscriber = self.subscriber
        settings = self._services.settings
        if subscriber.closing:
            return  # a close is on its way; requests after it are moot
        # Every frame counts against the rate, before any work is spent on it; message contents are
        # never logged (an access_token carries a credential, a broadcast the application's data).
        admission = self._rate.admit()
        received = self._services.traffic.received
        if admission is not Admission.ACCEPT:
            received[traffic.RATE_LIMITED] += 1
            self._rate_limited(close=admission is Admission.CLOSE)
            return
        text = message.get("text")
        if text is None:
            received[traffic.BINARY] += 1
            self._reply(protocol.encode_error("binary frames are not supported: send JSON text"))
            return
        # len() counts characters; only encode when the text could be over the limit in UTF-8 bytes.
        limit = settings.realtime_max_message_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            received[traffic.TOO_LARGE] += 1
            self._reply(protocol.encode_error(f"message is larger than {limit} bytes"))
            subscriber.close(CLOSE_MESSAGE_TOO_BIG, "message too big")
            return
        try:
            request = protocol.parse_request(text)
        except protocol.ProtocolError as error:
            received[traffic.INVALID] += 1
            self._reply(protocol.encode_error(str(error), ref=error.ref, code=error.code))
            return
        received[traffic.request_type(request)] += 1
        if isinstance(request, protocol.AccessTokenRequest):
            await self._refresh_token(request)
            return
        kind = self._services.channels.of(request.channel.name)
        if not isinstance(request, protocol.ChannelRequest):
            await kind.handle(subscriber, request)
            return
        name = request.channel.name
        if request.type == "unsubscribe":
            await kind.unsubscribe(subscriber, request)
            return
        # Subscribing again to a channel already subscribed does not count; each subscription (a
        # subscribe with its own `subscription` id) counts as a channel.
        key = subscription_key(name, request.options.subscription)
        max_channels = settings.realtime_max_channels_per_connection
        if key not in subscriber.channels and len(subscriber.channels) >= max_channels:
            self._reply(
                protocol.encode_error(
                    f"too many channels: at most {max_channels} per connection; unsubscribe from one first",
                    ref=request.ref,
                    channel=name,
                    code="too_many_channels",
                )
            )
            return
        await kind.subscribe(subscriber, request)

    def _rate_limited(self, *, close: bool) -> None:
        rate = self._services.settings.realtime_max_messages_per_second
        if close:
            error = f"too many messages: sent persistently over {rate:g} per second, the connection is closed"
        else:
            error = f"rate limit exceeded: at most {rate:g} messages per second; this message was dropped"
        self._reply(protocol.encode_error(error, code="rate_limited"))
        if close:
            self.subscriber.close(CLOSE_POLICY_VIOLATION, "rate limit exceeded")

    async def _refresh_token(self, request: protocol.AccessTokenRequest) -> None:
        """Replace the connection's token in band. The new one must pass every check and name the same
        `sub`; an anonymous connection cannot take one (it would change who the connection is)."""
        services = self._services
        subscriber = self.subscriber
        if not subscriber.principal.authenticated:
            self._reply(
                protocol.encode_error(
                    "this connection has no token to replace: reconnect with the token to authenticate",
                    ref=request.ref,
                )
            )
            return
        try:
            principal = await services.verifier.verify(request.token)
        except AuthError as error:
            self._reply(protocol.encode_error(f"access_token refused: {error}", ref=request.ref))
            return
        if subscriber.closing:
            return  # expired (or closed) while the token was being checked
        if principal.user_id != subscriber.principal.user_id:
            self._reply(
                protocol.encode_error(
                    "access_token refused: it is for another subject ('sub') than this connection's; "
                    "reconnect to change users",
                    ref=request.ref,
                )
            )
            return
        left = services.hub.change_principal(subscriber, principal)
        self.schedule_expiry(principal)
        self._reply(protocol.encode_reply(request.ref))
        for kind in services.channels:
            await kind.principal_changed(subscriber, [name for name in left if name.startswith(kind.prefix)])

    # Frames

    def _start_writer(self) -> None:
        """Frames (or a close) were queued and no writer is running: start one."""
        if self._writer is None and not self._gone:
            self._writer = asyncio.get_running_loop().create_task(self._write_frames())

    async def _write_frames(self) -> None:
        """Sends queued frames in order, then ends; broadcasts to an idle, writable socket skip the queue
        (app.wire), so most connections never need this."""
        subscriber = self.subscriber
        try:
            while subscriber.backlog:
                frame = await subscriber.next_frame()
                if isinstance(frame, CloseFrame):
                    await self._socket.close(frame.code, frame.reason)
                    return
                await self._socket.send_text(frame)
                subscriber.sent()
        except (OSError, RuntimeError, WebSocketDisconnect):
            return  # the client went away; its disconnect cleans up
        finally:
            self._writer = None

    def _close(self) -> None:
        """The socket is gone: release everything the connection holds (once)."""
        lease, self._lease = self._lease, None
        if lease is None:
            return
        if self._expiry is not None:
            self._expiry.cancel()
        lease.release()
        subscriber = self.subscriber
        for kind in self._services.channels:
            kind.disconnected(subscriber)
        for replay in list(subscriber.replays.values()):
            replay.cancel()
        self._services.hub.disconnect(subscriber)
        subscriber.attach(None)
        if self._writer is not None:
            self._writer.cancel()
