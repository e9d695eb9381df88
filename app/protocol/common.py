"""What every part of the protocol shares: the error a client message can raise, refs, and clipping."""

from __future__ import annotations

import unicodedata

# A ref is echoed back verbatim, so it must stay small.
MAX_REF_LENGTH = 128

Ref = str | int


class ProtocolError(Exception):
    """A client message the server cannot act on; `str(error)` is the sentence sent back."""

    def __init__(self, message: str, ref: Ref | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref
        self.code = code


def parse_ref(value: object) -> Ref | None:
    # bool is an int subclass, but `true` as a ref is almost certainly a client bug.
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and len(value) <= MAX_REF_LENGTH:
        return value
    raise ProtocolError(f"ref must be a string of at most {MAX_REF_LENGTH} characters or an integer")


def clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def check_name(value: str, what: str, max_bytes: int) -> str:
    """A name of 1 to `max_bytes` UTF-8 bytes without control characters (a broadcast channel, an event)."""
    if not value:
        raise ProtocolError(f"{what} must not be empty")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise ProtocolError(f"{what} is not valid Unicode text") from None
    if size > max_bytes:
        raise ProtocolError(f"{what} is longer than {max_bytes} bytes")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ProtocolError(f"{what} contains a control character")
    return value
