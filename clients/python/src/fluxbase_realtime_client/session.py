"""One connection's life: read and dispatch frames, subscribe every stream, keep the token fresh.

The reader is the only task that touches the streams' buffers; it stops reading while a buffer is full
(backpressure), and the watchdog counts only the time spent waiting for a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from fluxbase_realtime_client.errors import ConnectionLost, ServerError
from fluxbase_realtime_client.messages import (
    Ack,
    Broadcast,
    Change,
    Error,
    Heartbeat,
    MalformedMessage,
    PresenceDiff,
    PresenceState,
    Ref,
    ServerMessage,
    Unknown,
    parse_server_message,
)
from fluxbase_realtime_client.requests import encode_access_token
from fluxbase_realtime_client.retry_after import wait
from fluxbase_realtime_client.streams import BroadcastChannel, ChangeStream, Stream
from fluxbase_realtime_client.tokens import refresh_delay, token_expiry

if TYPE_CHECKING:
    from fluxbase_realtime_client.client import RealtimeClient

log = logging.getLogger("fluxbase_realtime_client")

Reply = Ack | Error | ConnectionLost

# No frame for this many heartbeat intervals: the connection is dead (a frozen server, a silent network).
WATCHDOG_INTERVALS = 2.5
# A subscription that worked before is subscribed again after these; other refusals end it.
FATAL_CODES = frozenset({"forbidden", "too_many_channels"})
CLOSE_TIMEOUT = 1.0
# A token function that failed or gave no fresher token is asked again after at most this long.
RETRY_REFRESH_SECONDS = 5.0


@dataclass(slots=True)
class Outcome:
    """How a connection ended: `healthy` once the server answered anything but an error; `token_expired`
    when it closed because the token expired."""

    healthy: bool = False
    token_expired: bool = False
    close_code: int | None = None
    watchdog: bool = False


class Session:
    def __init__(self, client: RealtimeClient, connection: ClientConnection, token: str | None) -> None:
        self.client = client
        self.connection = connection
        self.token = token
        self.outcome = Outcome()
        self._tasks: list[asyncio.Task[Any]] = []

    async def serve(self) -> Outcome:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._subscribe_all()))
        if self.token is not None and self.client.tokens.fresh and self.client.refresh_in_band:
            self._tasks.append(loop.create_task(self._keep_token_fresh(self.token)))
        try:
            await self._read()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._end()
            await self._close()
        return self.outcome

    def _end(self) -> None:
        for stream in self.client.streams.values():
            stream.on_disconnect()
        pending, self.client.pending = self.client.pending, {}
        lost = ConnectionLost("the connection closed before the server answered")
        for answered in pending.values():
            answered(lost)

    async def _close(self) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.connection.close()
        except TimeoutError:
            self.connection.transport.abort()

    # Reading

    async def _read(self) -> None:
        watchdog = WATCHDOG_INTERVALS * self.client.heartbeat_interval
        while True:
            try:
                async with asyncio.timeout(watchdog):
                    frame = await self.connection.recv()
            except TimeoutError:
                log.warning("heartbeat_missed seconds=%.1f: reconnecting", watchdog)
                self.outcome.watchdog = True
                return
            except ConnectionClosed as closed:
                self.outcome.close_code = closed.rcvd.code if closed.rcvd is not None else None
                return
            try:
                message = parse_server_message(frame)
            except MalformedMessage as error:
                log.warning("malformed_server_message reason=%s", error)
                continue
            await self._dispatch(message)

    async def _dispatch(self, message: ServerMessage) -> None:
        client = self.client
        if isinstance(message, Change):
            self.outcome.healthy = True
            for stream in client.streams_for(message.channel, message.subscription):
                if isinstance(stream, ChangeStream):
                    await stream.on_change(message)
        elif isinstance(message, Broadcast):
            self.outcome.healthy = True
            for stream in client.streams_for(message.channel, message.subscription):
                if isinstance(stream, BroadcastChannel):
                    await stream.on_broadcast(message)
        elif isinstance(message, PresenceState | PresenceDiff):
            for stream in client.streams_for(message.channel, None):
                if isinstance(stream, BroadcastChannel):
                    await stream.on_presence(message)
        elif isinstance(message, Heartbeat):
            self.outcome.healthy = True
        elif isinstance(message, Ack):
            self.outcome.healthy = True
            answered = client.pending.pop(message.ref, None) if message.ref is not None else None
            if answered is not None:
                answered(message)
        elif isinstance(message, Error):
            await self._on_error(message)
        elif isinstance(message, Unknown):
            log.debug("unknown_server_message type=%s", message.type)

    async def _on_error(self, error: Error) -> None:
        client = self.client
        answered = client.pending.pop(error.ref, None) if error.ref is not None else None
        if answered is not None:
            answered(error)
            return
        streams = client.streams_for(error.channel, error.subscription)
        if error.code == "replay_gap":
            for stream in streams:
                await stream.on_gap(error)
        elif error.code == "subscribe_failed":
            for stream in streams:  # the server dropped the subscription: subscribe again, from its point
                stream.acked = False
                client.spawn(self._retry(stream, 0, error.retry_after))
        elif error.code == "forbidden" and streams:
            for stream in streams:
                client.detach(stream)
                stream.fail(stream.refused(error))
        elif error.code == "token_expired":
            self.outcome.token_expired = True
        elif error.code == "rate_limited":
            # A message was dropped unread (so no ref says which): the server's limit is below the
            # client's, so the client slows down; a subscribe still unanswered may be the one dropped
            # and would never be answered: subscribing again is harmless.
            client.pacer.slow_down()
            log.warning("rate_limited: now sending at most %g messages per second", client.pacer.rate)
            for stream in client.streams.values():
                if stream.subscribed_by is self and not stream.acked and not stream.retrying:
                    client.spawn(self._retry(stream, 0))
        else:
            client.last_error = error
            log.warning("server_error code=%s channel=%s: %s", error.code, error.channel, error.error)

    # Subscribing

    async def _subscribe_all(self) -> None:
        for stream in list(self.client.streams.values()):
            await self.subscribe(stream)

    async def subscribe(self, stream: Stream[Any], retries: int = 0) -> None:
        client = self.client
        if client.streams.get(stream.key) is not stream or client.session is not self:
            return
        if retries == 0 and stream.subscribed_by is self:
            return  # a stream attached while this session was subscribing the others: sent already
        stream.subscribed_by = self
        ref = client.next_ref()

        def answered(reply: Ack | Error | ConnectionLost) -> None:
            if client.streams.get(stream.key) is not stream:
                return
            if isinstance(reply, Ack):
                stream.on_ack(reply)
                if isinstance(stream, BroadcastChannel) and stream.tracking:
                    client.spawn(self._track_again(stream))
            elif isinstance(reply, Error):
                # subscribe_failed: the database was unavailable, "subscribe again"; a stream that worked
                # before is subscribed again after anything that is not a refusal for good.
                transient = reply.code == "subscribe_failed" or (
                    stream.ever_acked and reply.code not in FATAL_CODES
                )
                if transient:
                    client.spawn(self._retry(stream, retries, reply.retry_after))
                else:
                    client.detach(stream)
                    stream.fail(stream.refused(reply))

        client.pending[ref] = answered
        await client.send(self.connection, stream.subscribe_frame(ref))

    async def _retry(self, stream: Stream[Any], retries: int, retry_after: float | None = None) -> None:
        """Subscribe again after a backoff, on top of the `retry_after` a refusal for load asked for."""
        stream.retrying = True
        try:
            await asyncio.sleep(wait(retry_after, self.client.backoff.delay(retries)))
        finally:
            stream.retrying = False
        await self.subscribe(stream, retries + 1)

    async def _track_again(self, stream: BroadcastChannel) -> None:
        with contextlib.suppress(ConnectionLost):
            try:
                await self.client.request(stream.track_frame)
            except ServerError as error:
                log.warning("track_refused code=%s channel=%s", error.code, stream.channel)

    # Tokens

    async def _keep_token_fresh(self, token: str) -> None:
        """Replace the token in band before it expires. A token function that fails, or hands back no
        fresher token yet (one that caches its token until near expiry), is asked again a little later
        until the token has expired; a refusal by the server leaves the connection to expire. Either
        way the client then reconnects with a fresh token."""
        expires_at = token_expiry(token)
        delay: float | None = None  # None: wait until the refresh is due
        while expires_at is not None:
            if delay is None:
                delay = refresh_delay(expires_at, time.time(), self.client.refresh_margin)
            await asyncio.sleep(delay)
            delay = None
            try:
                fresh = await self.client.tokens.get()
            except Exception as error:
                log.warning("token_function_failed error=%s", type(error).__name__)
                fresh = None
            fresh_expiry = token_expiry(fresh) if fresh is not None else None
            if fresh is None or fresh_expiry is None or fresh_expiry <= expires_at:
                remaining = expires_at - time.time()
                if remaining <= 0:
                    return  # expired: the server closes the connection, the client reconnects
                delay = min(RETRY_REFRESH_SECONDS, remaining / 2)
                continue

            def refresh(ref: Ref, token: str = fresh) -> str:
                return encode_access_token(token, ref=ref)

            try:
                await self.client.request(refresh)
            except ServerError as error:
                log.warning("access_token_refused code=%s: reconnecting at expiry", error.code)
                return
            self.token, expires_at = fresh, fresh_expiry
