"""How long to wait before the next reconnect: full-jitter exponential backoff (pure).

Full jitter (a uniform draw in [0, min(cap, base * 2**attempt)]) spreads the reconnects of many clients
after a server restart instead of bringing them back in waves, and never gives up: past the cap every
attempt waits at most `cap` seconds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """`base`: the bound of the first retry; `cap`: the bound no wait exceeds (both in seconds)."""

    base: float = 0.5
    cap: float = 20.0

    def __post_init__(self) -> None:
        if not self.base > 0:
            raise ValueError("backoff base must be a positive number of seconds")
        if not self.cap >= self.base:
            raise ValueError("backoff cap must be at least the base")

    def bound(self, attempt: int) -> float:
        """The largest wait before retry number `attempt` (0 for the first retry)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # 2**attempt overflows a float past ~1024: the cap is reached long before.
        return self.cap if attempt >= 64 else min(self.cap, self.base * 2.0**attempt)

    def delay(self, attempt: int, uniform: Callable[[float, float], float] = random.uniform) -> float:
        """A wait drawn uniformly in [0, bound(attempt)]."""
        bound = self.bound(attempt)
        return min(bound, max(0.0, uniform(0.0, bound)))
