"""What the cluster needs of a transport between instances."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol


class BusUnavailable(Exception):
    """The bus cannot take packets now (its connection is down); `str(error)` says why."""


class BusTransport(Protocol):
    """Delivers each packet sent by any instance to every instance (the sender included), in the order
    each sender sent them, at most once: packets sent while a link is down are lost, and `run` reports
    every (re)connection so that the cluster can resynchronize."""

    name: str
    # The largest packet sent as it is; None: any size. (Larger ones are the transport's business.)
    max_packet_bytes: int | None

    @property
    def connected(self) -> bool: ...

    async def run(self, on_packet: Callable[[bytes], None], on_connected: Callable[[], None]) -> None:
        """Receive until cancelled, reconnecting with backoff; `on_connected` after each (re)connect."""
        ...

    async def send(self, packets: list[bytes]) -> None:
        """Send packets in order; raises BusUnavailable when they could not be handed over."""
        ...

    async def close(self) -> None: ...


def backoff(attempt: int, cap: float = 5.0) -> float:
    """Seconds before reconnect attempt `attempt` (1, 2, ...): exponential, capped, with full jitter."""
    return random.uniform(0, min(cap, 0.1 * 2**attempt))  # noqa: S311 - jitter, not security
