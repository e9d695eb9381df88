"""The outbound side of one WebSocket connection: a bounded queue of frames drained by one writer."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from app.services.audience import Audience, audience_of
from app.services.auth import Principal
from app.services.views import View
from app.wire import FrameWriter


@dataclass(frozen=True, slots=True)
class CloseFrame:
    """The last thing a writer sends: a close with this code and reason."""

    code: int
    reason: str = ""


class Subscriber:
    """Frames waiting for one client, plus what it is subscribed to.

    Producers (the hub, the connection's own request handling) call `offer`, which never blocks: a client
    that stops reading cannot slow anyone else down. A full queue means the client is too slow; the
    caller then closes it.
    """

    __slots__ = (
        "_capacity",
        "_closing",
        "_frames",
        "_held",
        "_on_backlog",
        "_room_needed",
        "_room_waiter",
        "_sending",
        "_waiter",
        "_writer",
        "audience",
        "channels",
        "client",
        "principal",
        "replays",
        "views",
    )

    def __init__(self, principal: Principal, capacity: int, client: str = "") -> None:
        self.principal = principal
        self.audience: Audience = audience_of(principal)
        self.client = client
        # Channels subscribed, live or still replaying; replays in progress, by channel.
        self.channels: set[str] = set()
        self.replays: dict[str, asyncio.Task[None]] = {}
        # The view of each subscription that is not plain (a filter, events, columns, an id), by key.
        self.views: dict[str, View] = {}
        self._capacity = capacity
        self._frames: deque[str] = deque()
        # The writer waiting in next_frame, if any; else what to call when there is something to send
        # (a connection starts its writer task only then: an idle connection has none).
        self._waiter: asyncio.Future[None] | None = None
        self._on_backlog: Callable[[], None] | None = None
        self._closing: CloseFrame | None = None
        self._room_waiter: asyncio.Future[None] | None = None
        self._room_needed = 0
        # The direct path to the socket (app.wire), and whether a queued frame is being sent right now.
        self._writer: FrameWriter | None = None
        self._sending = False
        # Direct-path frames of the batch being published, written together when it ends (Hub.batch).
        self._held: list[tuple[str, bytes]] | None = None

    def attach(self, writer: FrameWriter | None, on_backlog: Callable[[], None] | None = None) -> None:
        """The direct path to the socket, and what to call when frames (or a close) are queued while no
        writer waits in next_frame: the connection then starts one."""
        self._writer = writer
        self._on_backlog = on_backlog

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def queued(self) -> int:
        """Frames waiting in the queue."""
        return len(self._frames)

    @property
    def room(self) -> int:
        return self._capacity - len(self._frames)

    @property
    def closing(self) -> bool:
        return self._closing is not None

    def offer(self, frame: str, wire: bytes | None = None, batch: list[Subscriber] | None = None) -> bool:
        """Queue a frame; False when the queue is full (nothing is queued) or the connection is closing.

        With `wire` (the frame's bytes, built once for every subscriber) it is written to the socket at
        once when nothing is queued or being sent before it, so order is kept either way. With `batch`
        too, it is held until `flush` (the subscriber joins `batch` with its first held frame), so that a
        batch of changes costs one socket write per subscriber rather than one per change; while frames
        are held, every later direct-path frame joins them, batch or not.
        """
        if self._closing is not None or len(self._frames) >= self._capacity:
            return False
        if wire is not None and self._held is not None:
            # Behind the frames held for a batch (whichever batch, or none): order is kept.
            self._held.append((frame, wire))
            return True
        if wire is not None and not self._frames and not self._sending and self._writer is not None:
            if batch is not None:
                self._held = [(frame, wire)]
                batch.append(self)
                return True
            if self._writer.try_write(wire):
                return True
        self._queue_held()
        self._frames.append(frame)
        self._wake()
        return True

    def flush(self) -> None:
        """Write the frames held for a batch in one write, or queue them when the socket cannot take it."""
        held = self._held
        self._held = None
        if not held or self._closing is not None:
            return
        wire = held[0][1] if len(held) == 1 else b"".join(w for _, w in held)
        if self._frames or self._sending or self._writer is None or not self._writer.try_write(wire):
            self._frames.extend(f for f, _ in held)
            self._wake()

    def _queue_held(self) -> None:
        # A frame that must be queued goes behind the held ones: order is kept.
        if self._held:
            self._frames.extend(f for f, _ in self._held)
            self._held = None

    def close(self, code: int, reason: str = "", *, drop_pending: bool = False) -> None:
        """Ask the writer to close after the queued frames (or at once, dropping them)."""
        if self._closing is not None:
            return
        self._queue_held()
        if drop_pending:
            self._frames.clear()
        self._closing = CloseFrame(code, reason)
        self._wake()
        self._wake_room_waiter()

    async def wait_for_room(self, frames: int) -> None:
        """Wait until `frames` more fit (or the connection is closing): replays are paced by the reader."""
        self._room_needed = min(frames, self._capacity)
        while self.room < self._room_needed and self._closing is None:
            self._room_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._room_waiter
            finally:
                self._room_waiter = None

    @property
    def backlog(self) -> bool:
        """Whether a writer has something to do: frames queued, or a close to send."""
        return bool(self._frames) or self._closing is not None

    async def next_frame(self) -> str | CloseFrame:
        """The next frame to send, waiting for one; a CloseFrame once the queue is closed and drained."""
        while not self._frames:
            if self._closing is not None:
                return self._closing
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frame = self._frames.popleft()
        self._sending = True
        if self._room_waiter is not None and self.room >= self._room_needed:
            self._wake_room_waiter()
        return frame

    def sent(self) -> None:
        """The frame last returned by next_frame has been handed to the socket."""
        self._sending = False

    def _wake_room_waiter(self) -> None:
        waiter = self._room_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif self._on_backlog is not None:
            self._on_backlog()
