"""Tokens already verified, so that a reconnect storm of clients presenting the same tokens again does
not verify each signature again.

Keyed by a SHA-256 of the token (the token itself is never kept nor logged), bounded in entries (least
recently used goes first), and never used past the token's own expiry (leeway included) nor past
`ttl` seconds after it was verified: that bounds how long a token keeps being accepted after its key
left the JWKS.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

P = TypeVar("P")


class VerifiedTokens(Generic[P]):
    """What each recently verified token was verified as (`P`), until `valid_until` or `ttl`."""

    def __init__(self, *, size: int, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self._size = size
        self._ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, P]] = OrderedDict()
        self.hits = 0

    def get(self, token: str) -> P | None:
        if self._size <= 0:
            return None
        key = _digest(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, token: str, verified: P, valid_until: float | None) -> None:
        if self._size <= 0 or self._ttl <= 0:
            return
        until = self._clock() + self._ttl
        if valid_until is not None:
            until = min(until, valid_until)
        key = _digest(token)
        self._entries[key] = (until, verified)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
