"""RealtimeClient: one WebSocket multiplexing every stream, reconnecting for as long as the client lives.

The client owns the streams (subscriptions) and the requests waiting for an answer; each connection is
served by a `Session` (session.py), which reads frames, dispatches them to the streams and subscribes
them again, and ends when the connection does. Then the client waits (full-jitter backoff) and connects
again with a token from its source.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI

from fluxbase_realtime_client.backoff import Backoff
from fluxbase_realtime_client.errors import ClientClosed, ConnectionLost, ServerError, TokenExpiredError
from fluxbase_realtime_client.messages import BROADCAST_PREFIX, TABLE_PREFIX, Ack, Error, Ref
from fluxbase_realtime_client.pacing import TokenBucket
from fluxbase_realtime_client.requests import SubscribeOptions, as_tuple, encode_unsubscribe
from fluxbase_realtime_client.retry_after import refused_retry_after, wait
from fluxbase_realtime_client.session import Reply, Session
from fluxbase_realtime_client.streams import BroadcastChannel, ChangeStream, Stream, StreamKey
from fluxbase_realtime_client.tokens import DEFAULT_REFRESH_MARGIN, Token, TokenSource, token_expiry

log = logging.getLogger("fluxbase_realtime_client")

Status = Literal["idle", "connecting", "open", "closed"]


class RealtimeClient:
    """A client of fluxbase-realtime. Use it as `async with RealtimeClient(url) as client:`.

    - `token`: a JWT, or an async function returning a fresh one (called for every connection and every
      in-band refresh), or None (anonymous).
    - `heartbeat_interval`: the server's REALTIME_HEARTBEAT_INTERVAL; with no frame for 2.5 times that,
      the connection is taken for dead and replaced.
    - `backoff`: reconnect delays (full jitter, `Backoff(base, cap)`); the client never gives up.
    - `refresh_margin`: refresh the token in band this long before `exp` (or halfway through a shorter
      remaining lifetime); `refresh_in_band=False` lets tokens expire and reconnects with a fresh one.
    - `max_messages_per_second`: stay under the server's message rate when subscribing many streams.
    - `buffer_size`: events buffered per stream before the client stops reading (backpressure).
    - `connect_options`: passed to websockets' `connect` (e.g. `proxy=None`, `ssl=...`).
    """

    def __init__(
        self,
        url: str,
        *,
        token: Token | None = None,
        heartbeat_interval: float = 30.0,
        backoff: Backoff | None = None,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        refresh_in_band: bool = True,
        max_messages_per_second: float = 40.0,
        buffer_size: int = 1000,
        open_timeout: float = 10.0,
        max_message_bytes: int | None = 64 * 2**20,
        connect_options: Mapping[str, Any] | None = None,
        on_status: Callable[[Status], None] | None = None,
    ) -> None:
        if not heartbeat_interval > 0:
            raise ValueError("heartbeat_interval must be a positive number of seconds")
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self.url = url
        self.tokens = TokenSource(token)
        self.heartbeat_interval = heartbeat_interval
        self.backoff = backoff or Backoff()
        self.refresh_margin = refresh_margin
        self.refresh_in_band = refresh_in_band
        self.buffer_size = buffer_size
        self._open_timeout = open_timeout
        self._max_message_bytes = max_message_bytes
        self._connect_options = dict(connect_options or {})
        self._on_status = on_status
        self.pacer = TokenBucket(max_messages_per_second)
        self._send_lock = asyncio.Lock()
        self.streams: dict[StreamKey, Stream[Any]] = {}
        self.pending: dict[Ref, Callable[[Reply], None]] = {}
        self._refs = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._run_task: asyncio.Task[None] | None = None
        self.session: Session | None = None
        self.status: Status = "idle"
        self.connects = 0  # successful handshakes so far
        self.last_error: Error | None = None  # the last error the server sent that answered no request
        self._closed = False

    # Life

    async def __aenter__(self) -> RealtimeClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting (done for you by `async with` and by the first stream)."""
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._run_task is None:
            self._run_task = asyncio.get_running_loop().create_task(self._run(), name="fluxbase-realtime")

    async def close(self) -> None:
        """Close the connection and end every stream (their iterations stop)."""
        if self._closed:
            return
        self._closed = True
        tasks = [*self._tasks, *([self._run_task] if self._run_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in list(self.streams.values()):
            stream.end()
        self.streams.clear()
        self._set_status("closed")

    # Streams

    def changes(
        self,
        channel: str,
        *,
        filter: str | None = None,  # the protocol's name, though it shadows a builtin
        events: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
        subscription: str | None = None,
        since: int | None = None,
    ) -> ChangeStream:
        """Subscribe to a table channel (`table:schema.table`); iterate the result for Change and Reset.
        `since`: start after this change id (replaying what followed it)."""
        if not channel.startswith(TABLE_PREFIX):
            raise ValueError("a table channel looks like 'table:schema.table'")
        options = SubscribeOptions(
            filter=filter, events=as_tuple(events), columns=as_tuple(columns), subscription=subscription
        )
        stream = ChangeStream(self, channel, options, since, self.buffer_size)
        self._attach(stream)
        return stream

    def channel(
        self, channel: str, *, self_broadcasts: bool | None = None, since: int | None = None
    ) -> BroadcastChannel:
        """Subscribe to a broadcast channel (`broadcast:name`): broadcasts, presence, send, track."""
        if not channel.startswith(BROADCAST_PREFIX):
            raise ValueError("a broadcast channel looks like 'broadcast:name'")
        stream = BroadcastChannel(
            self, channel, SubscribeOptions(self_broadcasts=self_broadcasts), since, self.buffer_size
        )
        self._attach(stream)
        return stream

    def _attach(self, stream: Stream[Any]) -> None:
        if stream.key in self.streams:
            raise ValueError(
                f"already subscribed to {stream.channel} with this subscription id: pass another "
                "`subscription` to subscribe to one channel twice"
            )
        self.start()
        self.streams[stream.key] = stream
        if self.session is not None:
            self.spawn(self.session.subscribe(stream))

    def detach(self, stream: Stream[Any]) -> None:
        if self.streams.get(stream.key) is not stream:
            return
        del self.streams[stream.key]
        session = self.session
        if session is not None and stream.acked:
            ref = self.next_ref()
            self.pending[ref] = lambda reply: None  # whatever the answer, the stream is gone
            frame = encode_unsubscribe(stream.channel, subscription=stream.subscription, ref=ref)
            self.spawn(self.send(session.connection, frame))

    def connected_and_acked(self, stream: Stream[Any]) -> bool:
        return self.session is not None and stream.acked

    def streams_for(self, channel: str | None, subscription: str | None) -> list[Stream[Any]]:
        """The streams a frame is for: the one with that subscription id; without one, the channel's
        stream without an id, or else every stream of the channel (a server that does not echo ids
        serves them all with one subscription)."""
        if channel is None:
            return []
        exact = self.streams.get((channel, subscription))
        if exact is not None or subscription is not None:
            return [exact] if exact is not None else []
        return [s for s in self.streams.values() if s.channel == channel]

    # Requests

    def next_ref(self) -> str:
        return f"c{next(self._refs)}"

    async def send(self, connection: ClientConnection, frame: str) -> None:
        """Send one frame, paced under the server's message rate; a closed connection drops it (the
        session's reader sees the close)."""
        async with self._send_lock:
            wait = self.pacer.take(time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
            with contextlib.suppress(ConnectionClosed):
                await connection.send(frame)

    async def request(self, build: Callable[[Ref], str]) -> Ack:
        """Send a request with a fresh ref and wait for its ack (ServerError on an error, ConnectionLost
        when the connection closes first)."""
        session = self.session
        if session is None:
            raise ConnectionLost("not connected")
        ref = self.next_ref()
        answer: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()

        def answered(reply: Reply) -> None:
            if answer.done():
                return
            if isinstance(reply, Ack):
                answer.set_result(reply)
            elif isinstance(reply, Error):
                answer.set_exception(ServerError(reply))
            else:
                answer.set_exception(reply)

        self.pending[ref] = answered
        await self.send(session.connection, build(ref))
        return await answer

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("client_task_failed", exc_info=task.exception())

    # Connections

    def _set_status(self, status: Status) -> None:
        if status != self.status:
            self.status = status
            if self._on_status is not None:
                self._on_status(status)

    def _fail_all(self, error: BaseException) -> None:
        for stream in list(self.streams.values()):
            stream.fail(error)
        self.streams.clear()

    async def _token_for_connect(self) -> str | None:
        token = await self.tokens.get()
        if token is not None and not self.tokens.fresh:
            expires_at = token_expiry(token)
            if expires_at is not None and expires_at <= time.time():
                raise TokenExpiredError(
                    "the token has expired and the client has no token function to get a fresh one"
                )
        return token

    async def _run(self) -> None:
        attempt = 0
        try:
            while True:
                self._set_status("connecting")
                delay_first = True
                retry_after: float | None = None  # what a refusal of the handshake asked for
                try:
                    token = await self._token_for_connect()
                    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
                    connection = await connect(
                        self.url,
                        additional_headers=headers,
                        open_timeout=self._open_timeout,
                        max_size=self._max_message_bytes,
                        **self._connect_options,
                    )
                except TokenExpiredError as error:
                    self._fail_all(error)
                    return
                except InvalidURI as error:
                    self._fail_all(error)
                    return
                except Exception as error:  # refused, unreachable, handshake timeout, token function
                    # A server at capacity (HTTP 503) says how long to stay away: at least that long.
                    retry_after = refused_retry_after(error, datetime.now(UTC))
                    log.info("connect_failed error=%s retry_after=%s", type(error).__name__, retry_after)
                else:
                    self.connects += 1
                    session = Session(self, connection, token)
                    self.session = session
                    self._set_status("open")
                    try:
                        outcome = await session.serve()
                    finally:
                        self.session = None
                    if outcome.healthy:
                        attempt = 0
                    # After an expiry close, a fresh token is one call away: reconnect at once, once.
                    delay_first = not (outcome.token_expired and self.tokens.fresh and attempt == 0)
                self._set_status("connecting")
                if delay_first:
                    await asyncio.sleep(wait(retry_after, self.backoff.delay(attempt)))
                attempt += 1
        finally:
            self.session = None
