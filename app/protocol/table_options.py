"""A table subscribe's options: `filter`, `events`, `columns` and `subscription`. Pure: the shapes are
checked here; what the filter means and which columns exist is the table channel's to check."""

from __future__ import annotations

from dataclasses import dataclass

from app.protocol.common import ProtocolError, check_name

# TRUNCATE is delivered where the capture reports it (every row of the table is gone).
EVENTS = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
MAX_SUBSCRIPTION_BYTES = 128
MAX_COLUMN_BYTES = 63  # PostgreSQL's identifiers


@dataclass(frozen=True, slots=True)
class TableOptions:
    """None: not given (every row, every event, every column; the channel's one subscription)."""

    filter: str | None = None
    events: frozenset[str] | None = None
    columns: tuple[str, ...] | None = None
    subscription: str | None = None


NO_OPTIONS = TableOptions()


def parse_table_options(message: dict[str, object], *, subscribe: bool) -> TableOptions:
    """The options of a table subscribe (or, `subscribe=False`, an unsubscribe: only `subscription`)."""
    subscription = message.get("subscription")
    if subscription is not None:
        if not isinstance(subscription, str):
            raise ProtocolError("subscription must be a string: an id of the client's choosing")
        check_name(subscription, "subscription", MAX_SUBSCRIPTION_BYTES)
    if not subscribe:
        return TableOptions(subscription=subscription)
    text = message.get("filter")
    if text is not None and not isinstance(text, str):
        raise ProtocolError("filter must be a string such as 'status=eq.paid,amount=gt.100'")
    return TableOptions(text, _events(message.get("events")), _columns(message.get("columns")), subscription)


def _events(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    shape = f"events must be a list of {', '.join(EVENTS)}"
    if not isinstance(value, list) or not value:
        raise ProtocolError(shape)
    for event in value:
        if not isinstance(event, str) or event.upper() not in EVENTS:
            shown = repr(event) if isinstance(event, str) and len(event) < 40 else "a value"
            raise ProtocolError(f"{shape}; {shown} is not one of them")
    return frozenset(event.upper() for event in value)


def _columns(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise ProtocolError("columns must be a non-empty list of column names")
    for column in value:
        check_name(column, "a column name", MAX_COLUMN_BYTES)
    return tuple(dict.fromkeys(value))
