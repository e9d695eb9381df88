"""What the client sends: typed requests in, JSON text frames out (pure, no I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fluxbase_realtime_client.messages import Ref


@dataclass(frozen=True, slots=True)
class SubscribeOptions:
    """Options of a subscribe, passed through to the server as given.

    Table channels: `filter` (PostgREST syntax, e.g. "status=eq.paid"), `events` (INSERT, UPDATE,
    DELETE...), `columns`, and `subscription` (a client-chosen id, needed to subscribe twice to one
    channel on one connection). Broadcast channels: `self` (receive your own broadcasts).
    """

    filter: str | None = None
    events: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    subscription: str | None = None
    self_broadcasts: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        message: dict[str, Any] = dict(self.extra)
        if self.filter is not None:
            message["filter"] = self.filter
        if self.events is not None:
            message["events"] = list(self.events)
        if self.columns is not None:
            message["columns"] = list(self.columns)
        if self.subscription is not None:
            message["subscription"] = self.subscription
        if self.self_broadcasts is not None:
            message["self"] = self.self_broadcasts
        return message


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _with_ref(message: dict[str, Any], ref: Ref | None) -> str:
    if ref is not None:
        message["ref"] = ref
    return _dumps(message)


def encode_subscribe(
    channel: str, options: SubscribeOptions, *, since: int | None = None, ref: Ref | None = None
) -> str:
    # `since` as a string of digits: ids are bigints and the server takes both forms.
    message: dict[str, Any] = {"type": "subscribe", "channel": channel, **options.fields()}
    if since is not None:
        message["since"] = str(since)
    return _with_ref(message, ref)


def encode_unsubscribe(channel: str, *, subscription: str | None = None, ref: Ref | None = None) -> str:
    message: dict[str, Any] = {"type": "unsubscribe", "channel": channel}
    if subscription is not None:
        message["subscription"] = subscription
    return _with_ref(message, ref)


def encode_access_token(token: str, *, ref: Ref | None = None) -> str:
    return _with_ref({"type": "access_token", "token": token}, ref)


def encode_broadcast(channel: str, event: str, payload: Any, *, ref: Ref | None = None) -> str:
    return _with_ref({"type": "broadcast", "channel": channel, "event": event, "payload": payload}, ref)


def encode_track(channel: str, state: Any, *, ref: Ref | None = None) -> str:
    return _with_ref({"type": "track", "channel": channel, "state": state}, ref)


def encode_untrack(channel: str, *, ref: Ref | None = None) -> str:
    return _with_ref({"type": "untrack", "channel": channel}, ref)


def as_tuple(values: Sequence[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise TypeError("expected a list of names, not one string")
    return tuple(values)
