"""The outbound side of one WebSocket connection: a bounded queue of frames drained by one writer."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from app.services.auth import Principal


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

    __slots__ = ("_capacity", "_closing", "_frames", "_waiter", "channels", "client", "principal")

    def __init__(self, principal: Principal, capacity: int, client: str = "") -> None:
        self.principal = principal
        self.client = client
        self.channels: set[str] = set()
        self._capacity = capacity
        self._frames: deque[str] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closing: CloseFrame | None = None

    @property
    def room(self) -> int:
        return self._capacity - len(self._frames)

    @property
    def closing(self) -> bool:
        return self._closing is not None

    def offer(self, frame: str) -> bool:
        """Queue a frame; False when the queue is full (nothing is queued) or the connection is closing."""
        if self._closing is not None or len(self._frames) >= self._capacity:
            return False
        self._frames.append(frame)
        self._wake()
        return True

    def close(self, code: int, reason: str = "", *, drop_pending: bool = False) -> None:
        """Ask the writer to close after the queued frames (or at once, dropping them)."""
        if self._closing is not None:
            return
        if drop_pending:
            self._frames.clear()
        self._closing = CloseFrame(code, reason)
        self._wake()

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
        return self._frames.popleft()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
