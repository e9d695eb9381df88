"""pgoutput rows as composite literals, `("1","Widget",)`: what the logical consumer writes to the change
log, cast there to the table's row type so that each column's input function reads exactly the text its
output function produced (app/services/logical_session.py). An Insert goes from its message's bytes
straight to its literal, the consumer's hot path; the other rows come from app.services.pgoutput's parse.
"""

from __future__ import annotations

import struct

from app.services.pgoutput import INT16, INT32, UNCHANGED, ProtocolError, Row, Unchanged, Value

_INSERT_HEAD = struct.Struct("!xIc")


def insert_literal(data: bytes, positions: tuple[int | None, ...] | None) -> tuple[int, str]:
    """An Insert message straight to (relation oid, row_literal of its row): the consumer's hot path, with
    no message object, no row tuple and no per-column objects beyond the values' text. The same result
    as `parse_message` then `row_literal` (tests/unit/test_pgoutput.py holds them to it); `positions`
    None: the table's columns are the stream's, in its order."""
    try:
        oid, marker = _INSERT_HEAD.unpack_from(data, 0)
        (count,) = INT16.unpack_from(data, 6)
    except struct.error:
        raise ProtocolError("message ends early") from None
    if data[:1] != b"I" or marker != b"N":
        raise ProtocolError("not an Insert with its new tuple")
    offset = 8
    values: list[str] = []
    append = values.append
    size = len(data)
    try:
        for _ in range(count):
            kind = data[offset]
            offset += 1
            if kind == 0x74:  # 't'
                (length,) = INT32.unpack_from(data, offset)
                offset += 4
                end = offset + length
                if length < 0 or end > size:
                    raise ProtocolError("message ends early")
                text = data[offset:end].decode("utf-8")
                if '"' in text or "\\" in text:
                    text = text.replace("\\", "\\\\").replace('"', '\\"')
                append('"' + text + '"')
                offset = end
            elif kind == 0x6E or kind == 0x75:  # 'n', or 'u' (not in an Insert; NULL as row_literal does)
                append("")
            elif kind == 0x62:  # 'b'
                raise ProtocolError("binary tuple data was not requested")
            else:
                raise ProtocolError(f"unknown tuple data kind {bytes([kind])!r}")
    except (struct.error, IndexError):
        raise ProtocolError("message ends early") from None
    if offset != size:
        raise ProtocolError(f"{size - offset} unread bytes after the message")
    if positions is None:
        return oid, "(" + ",".join(values) + ")"
    return oid, "(" + ",".join(values[p] if p is not None and p < count else "" for p in positions) + ")"


def fill_unchanged(new: Row, old: Row | None) -> Row:
    """`new` with each unchanged TOASTed value taken from the old row (NULL when the old row lacks it, which
    only happens without REPLICA IDENTITY FULL)."""
    if UNCHANGED not in new:
        return new
    filled: list[Value] = []
    for position, value in enumerate(new):
        if value is UNCHANGED:
            previous = old[position] if old is not None and position < len(old) else None
            value = None if previous is UNCHANGED else previous
        filled.append(value)
    return tuple(filled)


def row_literal(row: Row, positions: tuple[int | None, ...]) -> str:
    """The row as a composite literal, `("1","Widget",)`, in the table's column order: `positions[i]` is
    the index in `row` of the table's i-th column (None: not in the stream, e.g. generated, so NULL).
    Casting it to the table's row type runs each column's input function on exactly the text its output
    function produced, so `to_jsonb` renders the record as the trigger's `to_jsonb(NEW)` does."""
    parts: list[str] = []
    for position in positions:
        value = row[position] if position is not None and position < len(row) else None
        if value is None or isinstance(value, Unchanged):
            parts.append("")
        else:
            parts.append('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "(" + ",".join(parts) + ")"
