"""Per-connection and per-client limits: connections per user and per address, inbound message rate,
allowed origins, and the timer that ends a connection when its token expires.

Everything here is synchronous and runs on the event loop; nothing awaits, so no check can interleave
with another.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import Counter
from collections.abc import Callable, Collection

# A connection whose messages keep being refused is closed once the refusals exceed what it could send in
# this many seconds at the allowed rate: the refusal budget holds `rate * ABUSE_SECONDS` messages and
# refills at `rate`, so sending at up to twice the rate is only ever refused, and sending three times the
# rate closes the connection after about ABUSE_SECONDS.
ABUSE_SECONDS = 5.0


# The longest single wait of an expiry timer; a later expiry re-arms it (see ExpiryTimer).
MAX_TIMER_SECONDS = 3600.0


class LimitExceeded(Exception):
    """A connection refused by a limit; `str(error)` is the reason sent to the client."""


class ConnectionLease:
    """One counted connection; `release` (idempotent) gives its slots back."""

    __slots__ = ("_address", "_limiter", "_user")

    def __init__(self, limiter: ConnectionLimiter, user: str | None, address: str | None) -> None:
        self._limiter: ConnectionLimiter | None = limiter
        self._user = user
        self._address = address

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release(self._user, self._address)


class ConnectionLimiter:
    """Open connections per user (the token's `sub`) and per client address.

    Anonymous connections and tokens without `sub` count only against their address; connections whose
    address is unknown (a Unix socket) count only against their user.
    """

    def __init__(self, *, per_user: int, per_address: int, total: int = 100_000) -> None:
        self._per_user = per_user
        self._per_address = per_address
        self._total = total
        self._users: Counter[str] = Counter()
        self._addresses: Counter[str] = Counter()
        self._open = 0  # leases held
        self.admitting = 0  # connections between enter() and their lease (or refusal)
        # Refusals, for /metrics.
        self.refused_per_user = 0
        self.refused_per_address = 0
        self.refused_capacity = 0

    def enter(self) -> bool:
        """A connection arrives: False when the instance is full (it is refused before anything is spent
        on it); else it counts as being admitted until `leave`, so that connections admitted at once cannot
        together overshoot the total."""
        if self._open + self.admitting >= self._total:
            self.refused_capacity += 1
            return False
        self.admitting += 1
        return True

    def leave(self) -> None:
        """The connection entered has its lease, or was refused."""
        self.admitting -= 1

    def acquire(self, user: str | None, address: str | None) -> ConnectionLease:
        """Count a connection, or raise LimitExceeded (counting nothing)."""
        if address and self._addresses[address] >= self._per_address:
            self.refused_per_address += 1
            raise LimitExceeded(
                f"too many connections from this address: at most {self._per_address} are allowed"
            )
        if user is not None and self._users[user] >= self._per_user:
            self.refused_per_user += 1
            raise LimitExceeded(f"too many connections for this user: at most {self._per_user} are allowed")
        if address:
            self._addresses[address] += 1
        if user is not None:
            self._users[user] += 1
        self._open += 1
        return ConnectionLease(self, user, address)

    def connections_of(self, user: str) -> int:
        return self._users[user]

    def connections_from(self, address: str) -> int:
        return self._addresses[address]

    def _release(self, user: str | None, address: str | None) -> None:
        self._open -= 1
        for counter, key in ((self._users, user), (self._addresses, address)):
            if key:
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]


class Admission(enum.Enum):
    ACCEPT = "accept"
    REFUSE = "refuse"  # over the rate: drop the message, say so, keep the connection
    CLOSE = "close"  # persistently over the rate: end the connection


class MessageRate:
    """A token bucket for one connection's inbound messages: `rate` per second, bursts of `rate`.

    Refused messages drain a second budget (see ABUSE_SECONDS); when it runs out, the verdict is CLOSE.
    """

    __slots__ = ("_abuse_budget", "_abuse_capacity", "_burst", "_clock", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = max(rate, 1.0)
        self._tokens = self._burst
        self._abuse_capacity = max(rate * ABUSE_SECONDS, 1.0)
        self._abuse_budget = self._abuse_capacity
        self._clock = clock
        self._last = clock()

    def admit(self) -> Admission:
        now = self._clock()
        refill = max(0.0, now - self._last) * self._rate
        self._last = now
        self._tokens = min(self._burst, self._tokens + refill)
        self._abuse_budget = min(self._abuse_capacity, self._abuse_budget + refill)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Admission.ACCEPT
        self._abuse_budget -= 1.0
        return Admission.CLOSE if self._abuse_budget < 0 else Admission.REFUSE


def origin_allowed(origin: str | None, allowed: Collection[str]) -> bool:
    """Whether a handshake's Origin may connect. `allowed` is normalized (lower case, no trailing slash);
    empty allows every origin, and a handshake without Origin (not a browser) is always allowed."""
    if not allowed or origin is None:
        return True
    return origin.strip().rstrip("/").lower() in allowed


class ExpiryTimer:
    """One event-loop timer per connection: calls `on_expiry` once the token's expiry time has passed.

    The loop's timers run on the monotonic clock and `exp` is wall-clock time, so a timer that fires
    early (a long wait, or a wall clock set back) re-arms itself instead of expiring the token.
    """

    __slots__ = ("_clock", "_expires_at", "_handle", "_on_expiry")

    def __init__(self, on_expiry: Callable[[], None], *, clock: Callable[[], float] = time.time) -> None:
        self._on_expiry = on_expiry
        self._clock = clock
        self._expires_at: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    @property
    def expires_at(self) -> float | None:
        return self._expires_at

    @property
    def scheduled(self) -> bool:
        return self._handle is not None

    def schedule(self, expires_at: float | None) -> None:
        """(Re)arm for `expires_at` (epoch seconds); None disarms (a token without `exp`)."""
        self.cancel()
        self._expires_at = expires_at
        self._arm()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        if self._expires_at is None:
            return
        delay = min(max(0.0, self._expires_at - self._clock()), MAX_TIMER_SECONDS)
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self._expires_at is not None and self._clock() < self._expires_at:
            self._arm()
            return
        self._expires_at = None
        self._on_expiry()
