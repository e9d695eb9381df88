"""Tokens: a fixed string or an async function that returns a fresh one, and when to refresh it.

The client reads a token's `exp` to know when to refresh it; it never verifies the token (the server
does) and never logs it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable

TokenFunction = Callable[[], Awaitable[str]]
Token = str | TokenFunction

# Refresh this long before `exp`, or halfway through a shorter remaining lifetime.
DEFAULT_REFRESH_MARGIN = 30.0


class TokenSource:
    """Where tokens come from. `fresh` says whether asking again can give a new token."""

    def __init__(self, token: Token | None) -> None:
        if token is not None and not isinstance(token, str) and not callable(token):
            raise TypeError("token must be a string, an async function returning one, or None")
        self._token = token

    @property
    def fresh(self) -> bool:
        return callable(self._token)

    @property
    def anonymous(self) -> bool:
        return self._token is None

    async def get(self) -> str | None:
        if self._token is None or isinstance(self._token, str):
            return self._token
        token = await self._token()
        if not isinstance(token, str) or not token:
            raise TypeError("the token function must return a non-empty string")
        return token


def token_expiry(token: str) -> float | None:
    """The token's `exp` (epoch seconds), read without verification; None when it has none or is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    body = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(body))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def refresh_delay(expires_at: float, now: float, margin: float = DEFAULT_REFRESH_MARGIN) -> float:
    """Seconds from `now` until the token should be replaced: `margin` before `exp`, or halfway through
    a remaining lifetime shorter than twice the margin; 0 when it is due (or past)."""
    remaining = expires_at - now
    if remaining <= 0:
        return 0.0
    return remaining - min(margin, remaining / 2)
