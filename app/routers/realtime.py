"""WebSocket /realtime: authenticates, then answers the client's requests and sends its frames."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from typing import Protocol

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app import protocol
from app.deps import ServicesDep
from app.services.auth import ANONYMOUS, AuthError, Principal
from app.services.container import Services
from app.services.limits import (
    Admission,
    ConnectionLease,
    ExpiryTimer,
    LimitExceeded,
    MessageRate,
    origin_allowed,
)
from app.services.subscribers import CloseFrame, Subscriber
from app.services.tables import TableStatus
from app.wire import FRAME_WRITER, Event, FrameWriter

log = logging.getLogger(__name__)
router = APIRouter()

SUBSCRIBE_FAILED = "subscribe failed (the database is unavailable): try again"
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009


@router.websocket("/realtime")
async def realtime_socket(websocket: WebSocket, services: ServicesDep) -> None:
    await websocket.accept()
    client = f"{websocket.client.host}:{websocket.client.port}" if websocket.client else ""
    # Every refusal at connect is an `error` and a close with 1008, and happens before anything is counted.
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, services.settings.realtime_allowed_origins):
        await _refuse(websocket, f"origin {_clip(origin)!r} is not allowed to connect", "origin not allowed")
        return
    principal = await _authenticate(websocket, services)
    if isinstance(principal, AuthError):
        await _refuse(websocket, str(principal), "invalid token")
        return
    try:
        lease = services.limits.acquire(
            principal.user_id, websocket.client.host if websocket.client else None
        )
    except LimitExceeded as error:
        await _refuse(websocket, str(error), "too many connections")
        return
    socket: FrameWriter | None = websocket.scope.get("extensions", {}).get(FRAME_WRITER)
    try:
        connection = Connection(socket or _AsgiSocket(websocket), socket, services, principal, client, lease)
    except BaseException:
        lease.release()
        raise
    if socket is not None:
        # From here on the connection is served without this task (app.wire): it returns, and with it go
        # the framework's coroutine frames and the handshake's objects. An idle connection runs no task.
        socket.detach(connection.receive)
        return
    await connection.serve(websocket)  # another server than app.wire's: this task serves it, as ASGI does


class _Socket(Protocol):
    """What a connection needs of its socket: app.wire.FrameWriter, or _AsgiSocket."""

    async def send_text(self, text: str) -> None: ...
    async def close(self, code: int, reason: str = "") -> None: ...
    def resume_reading(self) -> None: ...
    def abort(self) -> None: ...


class _AsgiSocket:
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

    Requests are answered one at a time, in order, as before: reading pauses after each message, and
    resumes once every message received has been taken. When the socket is gone, whatever it still had
    to say is moot: pending requests are dropped, and the connection is cleaned up once the request being
    answered (if any) is done.
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
        socket: _Socket,
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
        _token_expired(self.subscriber)

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

    async def _handle(self, message: Event) -> None:
        subscriber = self.subscriber
        services = self._services
        hub = services.hub
        if subscriber.closing:
            return  # a close is on its way; requests after it are moot
        # Every frame counts against the rate, before any work is spent on it; message contents are
        # never logged (an access_token carries a credential).
        admission = self._rate.admit()
        if admission is not Admission.ACCEPT:
            _rate_limited(subscriber, services, close=admission is Admission.CLOSE)
            return
        text = message.get("text")
        if text is None:
            hub.offer_to(
                [subscriber], protocol.encode_error("binary frames are not supported: send JSON text")
            )
            return
        # len() counts characters; only encode when the text could be over the limit in UTF-8 bytes.
        limit = services.settings.realtime_max_message_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            hub.offer_to([subscriber], protocol.encode_error(f"message is larger than {limit} bytes"))
            subscriber.close(CLOSE_MESSAGE_TOO_BIG, "message too big")
            return
        try:
            request = protocol.parse_request(text)
        except protocol.ProtocolError as error:
            hub.offer_to([subscriber], protocol.encode_error(str(error), ref=error.ref))
            return
        if isinstance(request, protocol.AccessTokenRequest):
            await _refresh_token(request, self, services)
            return
        name = request.channel.name
        # Subscribing again to a channel already subscribed does not count.
        max_channels = services.settings.realtime_max_channels_per_connection
        if (
            request.type == "subscribe"
            and name not in subscriber.channels
            and len(subscriber.channels) >= max_channels
        ):
            hub.offer_to(
                [subscriber],
                protocol.encode_error(
                    f"too many channels: at most {max_channels} per connection; unsubscribe from one first",
                    ref=request.ref,
                    channel=name,
                    code="too_many_channels",
                ),
            )
            return
        await _answer(request, subscriber, services)

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
        for replay in list(subscriber.replays.values()):
            replay.cancel()
        self._services.hub.disconnect(subscriber)
        subscriber.attach(None)
        if self._writer is not None:
            self._writer.cancel()


async def _authenticate(websocket: WebSocket, services: Services) -> Principal | AuthError:
    """The token comes from `Authorization: Bearer <token>` or `?token=`, never both; none: anonymous."""
    headers = websocket.headers.getlist("authorization")
    tokens = [token for token in websocket.query_params.getlist("token") if token]
    if len(headers) + len(tokens) > 1:
        return AuthError(
            "more than one token was sent (Authorization header and ?token=, or either twice): send one"
        )
    if headers:
        scheme, _, token = headers[0].strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return AuthError("the Authorization header must be 'Bearer <token>'")
    elif tokens:
        token = tokens[0]
    else:
        return ANONYMOUS
    try:
        return await services.verifier.verify(token)
    except AuthError as error:
        return error


async def _refuse(websocket: WebSocket, error: str, reason: str) -> None:
    """Refuse a connection that was never served: an `error` saying why, then close 1008."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):  # the client may be gone
        await websocket.send_text(protocol.encode_error(error))
        await websocket.close(CLOSE_POLICY_VIOLATION, reason)


def _clip(text: str | None, limit: int = 100) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit] + "…"


def _token_expired(subscriber: Subscriber) -> None:
    """The connection's token has expired (no access_token replaced it in time): error, then close 1008."""
    if subscriber.closing:
        return
    error = protocol.encode_error(
        "the token has expired: send a new one with an access_token message before it expires, "
        "or reconnect with a new token",
        code="token_expired",
    )
    # Frames already queued were authorized while the token was valid and go first; a queue too full to
    # take the error means a client too slow to matter: it gets the close at once.
    delivered = subscriber.offer(error)
    subscriber.close(CLOSE_POLICY_VIOLATION, "token expired", drop_pending=not delivered)


def _rate_limited(subscriber: Subscriber, services: Services, *, close: bool) -> None:
    rate = services.settings.realtime_max_messages_per_second
    if close:
        error = f"too many messages: sent persistently over {rate:g} per second, the connection is closed"
    else:
        error = f"rate limit exceeded: at most {rate:g} messages per second; this message was dropped"
    services.hub.offer_to([subscriber], protocol.encode_error(error, code="rate_limited"))
    if close:
        subscriber.close(CLOSE_POLICY_VIOLATION, "rate limit exceeded")


async def _refresh_token(
    request: protocol.AccessTokenRequest, connection: Connection, services: Services
) -> None:
    """Replace the connection's token in band. The new one must pass every check and name the same `sub`;
    an anonymous connection cannot take one (it would change who the connection is: reconnect instead)."""
    hub = services.hub
    subscriber = connection.subscriber
    current = subscriber.principal
    if not current.authenticated:
        hub.offer_to(
            [subscriber],
            protocol.encode_error(
                "this connection has no token to replace: reconnect with the token to authenticate",
                ref=request.ref,
            ),
        )
        return
    try:
        principal = await services.verifier.verify(request.token)
    except AuthError as error:
        hub.offer_to([subscriber], protocol.encode_error(f"access_token refused: {error}", ref=request.ref))
        return
    if subscriber.closing:
        return  # expired (or closed) while the token was being checked
    if principal.user_id != subscriber.principal.user_id:
        hub.offer_to(
            [subscriber],
            protocol.encode_error(
                "access_token refused: it is for another subject ('sub') than this connection's; "
                "reconnect to change users",
                ref=request.ref,
            ),
        )
        return
    left = hub.change_principal(subscriber, principal)
    connection.schedule_expiry(principal)
    hub.offer_to([subscriber], protocol.encode_reply(request.ref))
    if left:
        _rejoin(subscriber, left, services)


def _rejoin(subscriber: Subscriber, channels: list[str], services: Services) -> None:
    """Channels the subscriber left live delivery on when its principal changed: everything up to the
    feed's position now reached it live, so each rejoins from exactly there (replaying what the feed
    publishes meanwhile), with no await between the change and reading the position."""
    cursor = services.feed.last_id
    for name in channels:
        _stop_replay(subscriber, name)
        channel = protocol.parse_channel(name)
        task = asyncio.create_task(services.replayer.join(subscriber, channel, cursor))
        subscriber.replays[name] = task
        task.add_done_callback(
            functools.partial(_replay_ended, subscriber=subscriber, channel=name, services=services)
        )


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
    refusal = await _refusal(request, subscriber, services)
    if refusal is not None:
        hub.offer_to([subscriber], refusal)
        return
    if request.since is None and hub.is_live(subscriber, name):
        hub.offer_to([subscriber], protocol.encode_ack(name, request.ref))  # subscribing twice is harmless
        return
    if request.since is None:
        # "Now": every change committed before this pass is numbered at or below it. Taken before the ack
        # leaves, so that whatever the client commits after reading the ack is numbered after it; and
        # before anything changes, so that a failure leaves the subscription as it was.
        try:
            now = await services.feed.sequence()
        except Exception:
            log.exception("subscribe_failed channel=%s", name)
            hub.offer_to([subscriber], protocol.encode_error(SUBSCRIBE_FAILED, ref=request.ref, channel=name))
            return
    _stop_replay(subscriber, name)
    # Out of live delivery until the subscription has caught up with the feed, or a change could arrive
    # twice; the ack goes first, then anything replayed, then live changes.
    hub.unsubscribe(subscriber, name)
    subscriber.channels.add(name)
    hub.offer_to([subscriber], protocol.encode_ack(name, request.ref))
    if request.since is not None:
        replay = asyncio.create_task(services.replayer.replay(subscriber, request.channel, request.since))
        subscriber.replays[name] = replay
        replay.add_done_callback(lambda task: _replay_ended(task, subscriber, name, services))
        return
    # Exactly the changes numbered after "now", not those committed before that a lagging feed has yet to
    # publish. Usually the feed is there already and this returns without waiting.
    try:
        await services.replayer.join(subscriber, request.channel, now)
    except Exception:
        log.exception("subscribe_failed channel=%s", name)
        _abandon(subscriber, name, services, SUBSCRIBE_FAILED)


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


async def _refusal(
    request: protocol.ChannelRequest, subscriber: Subscriber, services: Services
) -> str | None:
    """The error that refuses this subscribe, or None."""
    channel = request.channel
    name = channel.name
    audience = subscriber.audience
    try:
        status = await services.tables.status(channel)
        access = await services.rls.access(channel, audience.role)
        through = await services.tables.captured_through(channel) if status is TableStatus.PARTITION else None
    except Exception:
        log.exception("table_status_failed")
        return protocol.encode_error(
            "could not check the table: the database is unavailable, try again", ref=request.ref, channel=name
        )
    table = f"{channel.schema}.{channel.table}"
    if status is TableStatus.MISSING:
        return protocol.encode_error(f"table {table} does not exist", ref=request.ref, channel=name)
    if status is TableStatus.PARTITION:
        return protocol.encode_error(
            f"table {table} is a partition of a realtime partitioned table, whose channel reports its "
            f"changes: subscribe to {through or 'the partitioned table'}",
            ref=request.ref,
            channel=name,
        )
    if status is TableStatus.DISABLED:
        return protocol.encode_error(
            f"realtime is not enabled on table {table}: run SELECT enable_realtime(schema, table)",
            ref=request.ref,
            channel=name,
        )
    if access is None or not access.rls_enabled or access.bypass or audience.bypasses_rls:
        return None
    role = audience.role
    if not access.role_exists:
        reason = f"role {role!r} does not exist in the database"
    elif not access.allowed_columns:
        reason = f"role {role!r} may not SELECT table {table}"
    elif access.policy_count == 0:
        reason = (
            f"table {table} has row-level security and no SELECT policy for role {role!r}: it can see no row"
        )
    else:
        return None
    return protocol.encode_error(reason, ref=request.ref, channel=name)
