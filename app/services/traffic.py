"""Counts of what crosses the front door that no other service keeps: messages received by type, and
connections refused before they were served. Read by /metrics (app.metrics) at scrape time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from app import protocol

# Received messages that were not requests, by what they were instead.
BINARY = "binary"
TOO_LARGE = "too_large"
INVALID = "invalid"
RATE_LIMITED = "rate_limited"


def request_type(request: protocol.Request) -> str:
    """The `type` a client gave a parsed request."""
    if isinstance(request, protocol.ChannelRequest):
        return request.type
    if isinstance(request, protocol.AccessTokenRequest):
        return "access_token"
    if isinstance(request, protocol.BroadcastRequest):
        return "broadcast"
    if isinstance(request, protocol.TrackRequest):
        return "track"
    return "untrack"


@dataclass(slots=True)
class Traffic:
    """One increment per message or refusal (a dict entry, never a label lookup per delivery)."""

    # By request type (subscribe, unsubscribe, access_token, broadcast, track, untrack) or by why the
    # message was not a request (binary, too_large, invalid, rate_limited: dropped unread).
    received: Counter[str] = field(default_factory=Counter)
    # Connections refused at connect, by reason (origin, token); the limiter counts its own refusals.
    refused: Counter[str] = field(default_factory=Counter)
