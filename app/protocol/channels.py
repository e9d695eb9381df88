"""Channel names: `table:{schema}.{table}` (a table's changes) and `broadcast:{name}` (messages and
presence that belong to no table)."""

from __future__ import annotations

from dataclasses import dataclass

from app.protocol.common import ProtocolError, check_name, clip

TABLE_PREFIX = "table:"
BROADCAST_PREFIX = "broadcast:"
# Kept for callers that only know table channels.
CHANNEL_PREFIX = TABLE_PREFIX
# PostgreSQL's NAMEDATALEN - 1: longer identifiers cannot name a table.
MAX_IDENTIFIER_BYTES = 63
MAX_BROADCAST_NAME_BYTES = 200

_SHAPES = "channels look like 'table:schema.table' or 'broadcast:name'"


@dataclass(frozen=True, slots=True)
class TableChannel:
    """`table:{schema}.{table}`: the changes of one table."""

    schema: str
    table: str

    @property
    def name(self) -> str:
        return f"{TABLE_PREFIX}{self.schema}.{self.table}"


@dataclass(frozen=True, slots=True)
class BroadcastChannel:
    """`broadcast:{topic}`: messages sent by clients, backends and the database, and presence."""

    topic: str

    @property
    def name(self) -> str:
        return f"{BROADCAST_PREFIX}{self.topic}"

    # Where its messages sent from the database are in the change log (sql/change_log.sql):
    # under an empty schema name, which no table has, and the topic as the table name.
    @property
    def schema(self) -> str:
        return ""

    @property
    def table(self) -> str:
        return self.topic


Channel = TableChannel | BroadcastChannel


def parse_channel(value: object) -> Channel:
    """Validate a channel name. A table's schema ends at the first dot; the table name may contain dots."""
    if value is None:
        raise ProtocolError("missing channel: expected a string like 'table:public.products'")
    if not isinstance(value, str):
        raise ProtocolError("channel must be a string like 'table:public.products'")
    if value.startswith(BROADCAST_PREFIX):
        return parse_broadcast_topic(value[len(BROADCAST_PREFIX) :])
    if not value.startswith(TABLE_PREFIX):
        raise ProtocolError(f"invalid channel {clip(value)!r}: {_SHAPES}")
    schema, dot, table = value[len(TABLE_PREFIX) :].partition(".")
    if not dot or not schema or not table:
        raise ProtocolError(f"invalid channel {clip(value)!r}: {_SHAPES}")
    for kind, name in (("schema", schema), ("table", table)):
        if "\x00" in name:
            raise ProtocolError(f"invalid channel: the {kind} name contains a NUL character")
        if len(name.encode()) > MAX_IDENTIFIER_BYTES:
            raise ProtocolError(
                f"invalid channel: the {kind} name is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes"
            )
    return TableChannel(schema, table)


def parse_broadcast_topic(topic: str) -> BroadcastChannel:
    """The part after `broadcast:`: 1 to 200 UTF-8 bytes, no control characters."""
    try:
        check_name(topic, "the broadcast channel name", MAX_BROADCAST_NAME_BYTES)
    except ProtocolError as error:
        raise ProtocolError(f"invalid channel: {error}") from None
    return BroadcastChannel(topic)
