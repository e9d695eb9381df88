"""A bounded buffer between the connection and one subscription's consumer.

When it is full the connection stops reading: the server's send queue fills instead and, if the consumer
stays behind, the server closes the connection (1013) and the client resumes from the last change it
delivered. So a slow consumer costs memory bounded by `maxsize`, never a lost change.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class EventBuffer(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("the buffer needs room for at least one event")
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._ended = False
        self._error: BaseException | None = None
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ended(self) -> bool:
        return self._ended

    async def put(self, item: T) -> None:
        """Append, waiting for room; an ended buffer drops the item."""
        while len(self._items) >= self._maxsize and not self._ended:
            self._changed.clear()
            await self._changed.wait()
        if not self._ended:
            self._items.append(item)
            self._changed.set()

    def end(self, error: BaseException | None = None) -> None:
        """No more items: what is buffered is still handed out, then `error` is raised (or iteration ends)."""
        if not self._ended:
            self._ended = True
            self._error = error
            self._changed.set()

    async def get(self) -> T:
        while not self._items:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()
        item = self._items.popleft()
        self._changed.set()  # wakes a put waiting for room
        return item
