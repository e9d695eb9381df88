"""WebSocket /realtime: authenticates, reads client requests, and runs the connection's writer."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app import protocol
from app.deps import ServicesDep
from app.services.auth import ANONYMOUS, AuthError, Principal
from app.services.container import Services
from app.services.limits import Admission, ExpiryTimer, LimitExceeded, MessageRate, origin_allowed
from app.services.subscribers import CloseFrame, Subscriber
from app.services.tables import TableStatus
from app.wire import FRAME_WRITER

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
    # Nothing between the lease and the `try` can raise: the `finally` releases it on every path.
    subscriber = services.hub.connect(principal, client)
    subscriber.attach(websocket.scope.get("extensions", {}).get(FRAME_WRITER))
    expiry = ExpiryTimer(lambda: _token_expired(subscriber))
    expiry.schedule(services.verifier.expires_at(principal))
    writer = asyncio.create_task(_write_frames(websocket, subscriber))
    try:
        await _serve_requests(websocket, subscriber, services, expiry)
    finally:
        expiry.cancel()
        lease.release()
        for replay in list(subscriber.replays.values()):
            replay.cancel()
        services.hub.disconnect(subscriber)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


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


async def _write_frames(websocket: WebSocket, subscriber: Subscriber) -> None:
    """Sends queued frames in order; broadcasts to an idle, writable socket skip the queue (app.wire)."""
    try:
        while True:
            frame = await subscriber.next_frame()
            if isinstance(frame, CloseFrame):
                await websocket.close(frame.code, frame.reason)
                return
            await websocket.send_text(frame)
            subscriber.sent()
    except (WebSocketDisconnect, RuntimeError):
        return  # the client went away; the reader sees the disconnect and cleans up


async def _serve_requests(
    websocket: WebSocket, subscriber: Subscriber, services: Services, expiry: ExpiryTimer
) -> None:
    hub = services.hub
    settings = services.settings
    limit = settings.realtime_max_message_bytes
    max_channels = settings.realtime_max_channels_per_connection
    rate = MessageRate(settings.realtime_max_messages_per_second)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if subscriber.closing:
            continue  # a close is on its way; requests after it are moot
        # Every frame counts against the rate, before any work is spent on it; message contents are
        # never logged (an access_token carries a credential).
        admission = rate.admit()
        if admission is not Admission.ACCEPT:
            _rate_limited(subscriber, services, close=admission is Admission.CLOSE)
            continue
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
            request = protocol.parse_request(text)
        except protocol.ProtocolError as error:
            hub.offer_to([subscriber], protocol.encode_error(str(error), ref=error.ref))
            continue
        if isinstance(request, protocol.AccessTokenRequest):
            await _refresh_token(request, subscriber, services, expiry)
            continue
        name = request.channel.name
        # Subscribing again to a channel already subscribed does not count.
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
            continue
        await _answer(request, subscriber, services)


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
    request: protocol.AccessTokenRequest, subscriber: Subscriber, services: Services, expiry: ExpiryTimer
) -> None:
    """Replace the connection's token in band. The new one must pass every check and name the same `sub`;
    an anonymous connection cannot take one (it would change who the connection is: reconnect instead)."""
    hub = services.hub
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
    expiry.schedule(services.verifier.expires_at(principal))
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
