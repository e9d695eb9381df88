"""How long a server that refused the client for load asked it to wait (pure).

Two places say so: the `Retry-After` header of an HTTP refusal of the opening handshake (503 past the
server's REALTIME_MAX_CONNECTIONS, or 429/503 from a proxy in front of it), and the `retry_after` of a
`subscribe_failed` refused past REALTIME_MAX_PENDING_SUBSCRIBES. The client waits at least that long, plus
its usual full-jitter draw (`wait`), so that a fleet refused together does not come back together.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from websockets.exceptions import InvalidStatus

# A hint past this is taken as this: a proxy announcing an hour of maintenance should not park a client
# for an hour (it still backs off from there, and its backoff's cap may be larger).
MAX_RETRY_AFTER = 60.0


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """The seconds a `Retry-After` header value asks for, counted from `now` (an aware datetime):
    delay-seconds ("120") or an HTTP-date ("Wed, 21 Oct 2026 07:28:00 GMT"). None when the header is
    missing or malformed (a negative number included); a date already past is 0; at most MAX_RETRY_AFTER."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        # Many digits are many seconds: not parsed (Python refuses ints of thousands of digits).
        return MAX_RETRY_AFTER if len(text) > 9 else min(MAX_RETRY_AFTER, float(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" (and obsolete zones): UTC, by RFC 5322
        when = when.replace(tzinfo=UTC)
    return min(MAX_RETRY_AFTER, max(0.0, (when - now).total_seconds()))


def refused_retry_after(error: BaseException, now: datetime) -> float | None:
    """The wait an HTTP refusal of the opening handshake (websockets' InvalidStatus) asked for, if any
    (the first header of several)."""
    if not isinstance(error, InvalidStatus):
        return None
    values = error.response.headers.get_all("Retry-After")
    return parse_retry_after(values[0], now) if values else None


def frame_retry_after(value: object) -> float | None:
    """The `retry_after` of an error frame: a non-negative number of seconds, at most MAX_RETRY_AFTER;
    anything else is no hint (never an error: a hint must not break the client)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if (isinstance(value, float) and math.isnan(value)) or value < 0:
        return None
    # Compared before float(): JSON's integers have no bound, and a huge one would overflow a float.
    return MAX_RETRY_AFTER if value >= MAX_RETRY_AFTER else float(value)


def wait(hint: float | None, jitter: float) -> float:
    """The wait before the next attempt: the backoff's draw alone, or on top of the server's hint."""
    return jitter if hint is None else hint + jitter
