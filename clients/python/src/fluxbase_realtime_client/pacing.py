"""Keeps the client under the server's message rate (pure: the caller sleeps).

The server allows REALTIME_MAX_MESSAGES_PER_SECOND (default 50) in bursts of as many and answers more
with `rate_limited`, dropping the message. After a reconnect the client subscribes every stream again at
once: a token bucket spreads that over time instead.
"""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        if not rate > 0:
            raise ValueError("the message rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else rate
        if not self.burst >= 1:
            raise ValueError("the burst must allow at least one message")
        self._tokens = self.burst
        self._at: float | None = None

    def take(self, now: float) -> float:
        """Spend one message; returns how long to wait before sending it (0: now)."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def slow_down(self, floor: float = 1.0) -> None:
        """The server said `rate_limited`: its limit is below ours. Halve the rate (not below `floor`)."""
        self.rate = max(floor, self.rate / 2)
        self.burst = max(1.0, min(self.burst, self.rate))
        self._tokens = min(self._tokens, self.burst)
