"""The connection's socket, below ASGI: a direct path for broadcasts, and connections that need no task.

Through ASGI, every send to every subscriber re-encodes the text and builds a frame in
`websockets`' protocol object, through several coroutine layers. A broadcast is identical for all of a
channel's subscribers, so the hub builds its frame bytes once (`text_frame`) and `FrameWriter` writes them
straight to a transport when that is safe: the connection is open, its transport is not paused, and no
extension (permessage-deflate) transforms frames. Otherwise the frame takes the ASGI path, queued behind
whatever is already waiting, so order and backpressure are unchanged.

Through ASGI, a WebSocket connection is also a task for as long as it is open, suspended in the
application's `receive()` under a dozen framework coroutine frames and exit stacks, with the handshake's
request, response and scope alive: about two thirds of what an idle connection costs. So once the
application has accepted a connection and decided to serve it, it may `detach` it: the endpoint returns,
taking that task and those objects with it, the connection stays open, and every later event (a message,
the disconnect) is handed to a callback instead of queued for `receive()`. The application then runs a
task only while there is work (a request to answer, frames to send).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any, Literal

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.http11 import Request
from websockets.protocol import State

FRAME_WRITER = "fluxbase.frame_writer"

# An ASGI receive event ({"type": "websocket.receive", "text": ...}, {"type": "websocket.disconnect", ...}).
Event = dict[str, Any]
# Takes a detached connection's events. It is called from inside the protocol's callbacks (data received,
# connection lost, a close being sent), so it must not raise, and must leave any I/O to a task.
Receiver = Callable[[Event], None]


def text_frame(payload: str) -> bytes:
    """An unfragmented, unmasked text frame (servers never mask) carrying `payload`."""
    data = payload.encode()
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + data
    return struct.pack("!BBQ", 0x81, 127, size) + data


class FrameWriter:
    """One connection's socket: direct writes of complete frames when nothing makes that unsafe, sends as
    the ASGI application would make them, and detaching the connection from the application."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: DirectWriteProtocol) -> None:
        self._protocol = protocol

    def try_write(self, frame: bytes) -> bool:
        protocol = self._protocol
        if (
            not protocol.handshake_complete
            or protocol.close_sent
            or protocol.disconnected
            or not protocol.writable.is_set()
            or protocol.conn.state is not State.OPEN
            or protocol.conn.extensions
            or protocol.transport.is_closing()
        ):
            return False
        protocol.transport.write(frame)
        return True

    async def send_text(self, text: str) -> None:
        """Send a text message as the application's `websocket.send` would: once the transport takes
        writes, through `websockets` (extensions included). Raises OSError (uvicorn's ClientDisconnected)
        when the client is gone, RuntimeError after a close was sent."""
        await self._protocol.send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake, as the application's `websocket.close` would."""
        await self._protocol.send({"type": "websocket.close", "code": code, "reason": reason})

    def detach(self, receiver: Receiver) -> None:
        """Serve the connection without the ASGI application, which returns next without closing it.

        Events not yet received, then every later one, go to `receiver`. As under ASGI, reading pauses
        after each message, until `resume_reading`.
        """
        self._protocol.detach(receiver)

    def resume_reading(self) -> None:
        """Read more messages (what the application's `receive()` does once it has taken every message)."""
        protocol = self._protocol
        if protocol.read_paused:
            protocol.read_paused = False
            protocol.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection without a closing handshake (after an error in the application)."""
        self._protocol.transport.close()


class Inbox:
    """Stands in for uvicorn's per-connection `asyncio.Queue` of ASGI receive events, with the three
    methods its protocol uses (`put_nowait`, `get`, `empty`), single consumer. Until a receiver is
    attached it is a FIFO for the application's `receive()`; after, each event goes to the receiver.
    It allocates nothing while empty (an `asyncio.Queue` holds three deques and an Event: 3 KB)."""

    __slots__ = ("_events", "_receiver", "_waiter")

    def __init__(self) -> None:
        self._events: list[Event] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._receiver: Receiver | None = None

    def put_nowait(self, event: Event) -> None:
        if self._receiver is not None:
            self._receiver(event)
            return
        if self._events is None:
            self._events = []
        self._events.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self._events

    async def get(self) -> Event:
        while not self._events:
            if self._waiter is not None:
                raise RuntimeError("receive() is already being awaited on this connection")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._events.pop(0)

    def attach(self, receiver: Receiver) -> None:
        """Hand every event to `receiver` from now on, starting with those waiting."""
        self._receiver = receiver
        events, self._events = self._events, None
        for event in events or ():
            receiver(event)


class WritableFlag:
    """Stands in for uvicorn's `writable` asyncio.Event (`set`, `clear`, `is_set`, `wait`), allocating its
    waiters only when a send waits on a paused transport (an Event holds a deque: 760 bytes)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> Literal[True]:
        while not self._set:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True


class DirectWriteProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, offering a FrameWriter to the application in the scope, and
    able to go on serving a connection after the application returns (FrameWriter.detach)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # The same roles, lighter (they are per connection): see Inbox and WritableFlag.
        self.inbox = Inbox()
        self.queue = self.inbox  # type: ignore[assignment]
        self.writable = WritableFlag()  # type: ignore[assignment]
        self.detached = False

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][FRAME_WRITER] = FrameWriter(self)

    def detach(self, receiver: Receiver) -> None:
        self.detached = True
        self.inbox.attach(receiver)

    async def run_asgi(self) -> None:
        """uvicorn's `run_asgi`, except when the application detached the connection and returned: then
        the connection stays open, and the handshake's request, response and scope are let go."""
        failed = False
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            failed = True
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete and not self.transport.is_closing():
                # (uvicorn does not complete an accept on a closing transport: a client that left in
                # the handshake, hundreds at once when a fleet goes, is no error of the application's.)
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.detached and self.handshake_complete and not failed:
            # Nothing reads them after the handshake. websockets' parser keeps the request alive (a local
            # of its generator), so its headers are emptied too.
            self.request.headers.clear()
            self.scope = self.request = self.response = None  # type: ignore[assignment]
            return
        if self.close_timer is None:
            self.transport.close()
