"""The pgoutput decoder and replication stream framing, without a server."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.services import pgoutput, row_literals
from app.services.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Ignored,
    Insert,
    Keepalive,
    LogicalMessage,
    ProtocolError,
    Relation,
    Truncate,
    Update,
    XLogData,
)

# Captured from PostgreSQL 15 (START_REPLICATION ... proto_version '1') for
# `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t VALUES (1, 'a')`.
RELATION = (
    b"R\x00\x00@\x00public\x00t\x00d\x00\x02\x01id\x00\x00\x00\x00\x17\xff\xff\xff\xff"
    b"\x00v\x00\x00\x00\x00\x19\xff\xff\xff\xff"
)
INSERT = b"I\x00\x00@\x00N\x00\x02t\x00\x00\x00\x011t\x00\x00\x00\x01a"
BEGIN = b"B\x00\x00\x00\x00\x01S\xb2p\x00\x03\x04\xb7\xf8w\xcb\xcb\x00\x00\x02\xd6"
COMMIT = b"C\x00\x00\x00\x00\x00\x01S\xb2p\x00\x00\x00\x00\x01S\xb2\xa0\x00\x03\x04\xb7\xf8w\xcb\xcb"


def _tuple(values: tuple[pgoutput.Value, ...]) -> bytes:
    out = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED:
            out += b"u"
        else:
            assert isinstance(value, str)
            raw = value.encode()
            out += b"t" + struct.pack("!i", len(raw)) + raw
    return out


def test_captured_messages_decode() -> None:
    relation = pgoutput.parse_message(RELATION)
    assert relation == Relation(
        16384,
        "public",
        "t",
        "d",
        (pgoutput.Column("id", 23, -1, True), pgoutput.Column("v", 25, -1, False)),
    )
    assert pgoutput.parse_message(INSERT) == Insert(16384, ("1", "a"))
    begin = pgoutput.parse_message(BEGIN)
    assert isinstance(begin, Begin) and begin.xid == 726 and pgoutput.lsn_text(begin.final_lsn) == "0/153B270"
    commit = pgoutput.parse_message(COMMIT)
    assert isinstance(commit, Commit)
    assert commit.commit_lsn == begin.final_lsn and pgoutput.lsn_text(commit.end_lsn) == "0/153B2A0"
    assert commit.committed_at == begin.committed_at and commit.committed_at.year >= 2024


def test_updates_deletes_and_truncates() -> None:
    new = _tuple(("1", UNCHANGED, None))
    old = _tuple(("1", "big", "x"))
    assert pgoutput.parse_message(b"U" + struct.pack("!I", 7) + b"N" + new) == Update(
        7, None, False, ("1", UNCHANGED, None)
    )
    assert pgoutput.parse_message(b"U" + struct.pack("!I", 7) + b"O" + old + b"N" + new) == Update(
        7, ("1", "big", "x"), False, ("1", UNCHANGED, None)
    )
    assert pgoutput.parse_message(b"U" + struct.pack("!I", 7) + b"K" + old + b"N" + new).old_is_key  # type: ignore[union-attr]
    assert pgoutput.parse_message(b"D" + struct.pack("!I", 7) + b"O" + old) == Delete(
        7, ("1", "big", "x"), False
    )
    assert pgoutput.parse_message(b"T" + struct.pack("!IBII", 2, 3, 7, 8)) == Truncate(True, True, (7, 8))
    assert pgoutput.parse_message(b"O" + b"\x00" * 8 + b"origin\x00") == Ignored("O")
    # pg_logical_emit_message(true, 'p', '{}'): flags, LSN, prefix, then the content's length and bytes.
    message = b"M\x01" + struct.pack("!Q", 0x16B374D848) + b"p\x00" + struct.pack("!i", 2) + b"{}"
    assert pgoutput.parse_message(message) == LogicalMessage(True, 0x16B374D848, "p", b"{}")
    with pytest.raises(ProtocolError):
        pgoutput.parse_message(message[:-1])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"Z",
        INSERT[:-1],
        INSERT + b"x",
        b"I" + struct.pack("!I", 1) + b"X" + _tuple(("1",)),
        b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!h", 1) + b"b",
        b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!h", 1) + b"t" + struct.pack("!i", -5),
        b"D" + struct.pack("!I", 1) + b"N" + _tuple(("1",)),
        RELATION.replace(b"public\x00", b"public"),
    ],
)
def test_malformed_messages_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        pgoutput.parse_message(data)


values = st.one_of(st.none(), st.just(UNCHANGED), st.text())


@given(st.lists(values, max_size=20).map(tuple))
def test_any_tuple_round_trips(row: tuple[pgoutput.Value, ...]) -> None:
    assert pgoutput.parse_message(b"I" + struct.pack("!I", 99) + b"N" + _tuple(row)) == Insert(99, row)


def test_stream_framing() -> None:
    sent = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    micros = pgoutput.micros_since_epoch(sent)
    data = b"w" + struct.pack("!QQq", 10, 20, micros) + INSERT
    assert pgoutput.parse_stream_message(data) == XLogData(10, 20, micros, INSERT)
    assert pgoutput.parse_stream_message(b"k" + struct.pack("!Qq?", 30, micros, True)) == Keepalive(
        30, sent, True
    )
    status = pgoutput.standby_status(5, 6, 7, sent)
    assert status == b"r" + struct.pack("!QQQq?", 5, 6, 7, micros, False)
    with pytest.raises(ProtocolError):
        pgoutput.parse_stream_message(b"k" + b"\x00" * 5)
    with pytest.raises(ProtocolError):
        pgoutput.parse_stream_message(b"q")


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_lsn_text_round_trips(lsn: int) -> None:
    assert pgoutput.parse_lsn(pgoutput.lsn_text(lsn)) == lsn


def test_unchanged_values_are_filled_from_the_old_row() -> None:
    assert row_literals.fill_unchanged(("1", UNCHANGED), ("1", "old")) == ("1", "old")
    assert row_literals.fill_unchanged(("1", UNCHANGED), None) == ("1", None)
    same = ("1", "x")
    assert row_literals.fill_unchanged(same, None) is same


def test_row_literals_quote_and_reorder() -> None:
    assert row_literals.row_literal(('a"b', None, "c\\d", ""), (0, 1, 2, 3)) == '("a\\"b",,"c\\\\d","")'
    # The table's order is (v, id, generated): taken by name from the stream's (id, v).
    assert row_literals.row_literal(("1", "x"), (1, 0, None)) == '("x","1",)'


@given(
    st.lists(st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_categories=["Cs"]))), max_size=6),
    st.data(),
)
def test_insert_literal_is_parse_message_then_row_literal(
    values: list[str | None], data: st.DataObject
) -> None:
    message = b"I" + struct.pack("!I", 4242) + b"N" + _tuple(tuple(values))
    columns = len(values)
    positions = data.draw(
        st.lists(st.one_of(st.none(), st.integers(0, columns + 1)), max_size=columns + 2).map(tuple)
    )
    parsed = pgoutput.parse_message(message)
    assert isinstance(parsed, Insert)
    expected = row_literals.row_literal(parsed.new, positions)
    assert row_literals.insert_literal(message, positions) == (4242, expected)
    in_order = tuple(range(columns))
    expected = row_literals.row_literal(parsed.new, in_order)
    assert row_literals.insert_literal(message, None) == (4242, expected)
    for broken in (message[:-1], message + b"x", b"U" + message[1:]):
        if broken != message:
            with pytest.raises(ProtocolError):
                row_literals.insert_literal(broken, None)
