"""The streaming replication protocol and the `pgoutput` plugin's messages, as bytes <-> typed values.

No I/O: the logical consumer (app/services/logical_capture.py) feeds it what libpq's COPY BOTH stream
returns. Formats: PostgreSQL's "Streaming Replication Protocol" (XLogData 'w', Primary keepalive 'k',
Standby status update 'r') and "Logical Replication Message Formats" (protocol version 1: Begin, Commit,
Relation, Insert, Update, Delete, Truncate, logical decoding Message; Origin and Type are read and
ignored). Values arrive
in text form, as each column type's output function renders them; an unchanged TOASTed value (not in the
WAL) is `UNCHANGED`. What the consumer writes of those rows to the change log is app.services.row_literals.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

# Timestamps in the protocol are microseconds since 2000-01-01 00:00 UTC.
POSTGRES_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


class Unchanged:
    """A TOASTed column the update did not change: its value is not in the WAL (fill it from the old row)."""

    _instance: Unchanged | None = None

    def __new__(cls) -> Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = Unchanged()
Value = str | None | Unchanged
Row = tuple[Value, ...]


class ProtocolError(ValueError):
    """Bytes that are not a message this module knows how to read."""


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL writes it (`16/B374D848`)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def timestamp(micros: int) -> datetime:
    return POSTGRES_EPOCH + timedelta(microseconds=micros)


def micros_since_epoch(moment: datetime) -> int:
    return (moment - POSTGRES_EPOCH) // timedelta(microseconds=1)


# --- The replication stream (the CopyData payloads of START_REPLICATION) ---------------------------------


@dataclass(frozen=True, slots=True)
class XLogData:
    start: int  # WAL position where this message's data starts
    wal_end: int  # the server's current end of WAL
    sent_micros: int  # when the server sent it, in the protocol's microseconds (see timestamp())
    payload: bytes  # one pgoutput message


@dataclass(frozen=True, slots=True)
class Keepalive:
    wal_end: int
    sent_at: datetime
    reply_requested: bool


def parse_stream_message(data: bytes) -> XLogData | Keepalive:
    if not data:
        raise ProtocolError("empty replication message")
    kind = data[0:1]
    if kind == b"w":
        if len(data) < 25:
            raise ProtocolError("XLogData shorter than its header")
        start, end, sent = struct.unpack_from("!QQq", data, 1)
        return XLogData(start, end, sent, bytes(data[25:]))
    if kind == b"k":
        if len(data) != 18:
            raise ProtocolError(f"keepalive of {len(data)} bytes, not 18")
        end, sent, reply = struct.unpack_from("!Qq?", data, 1)
        return Keepalive(end, timestamp(sent), reply)
    raise ProtocolError(f"unknown replication message {kind!r}")


def standby_status(written: int, flushed: int, applied: int, now: datetime, *, reply: bool = False) -> bytes:
    """A Standby status update: the slot may release WAL up to `flushed` (confirmed_flush_lsn)."""
    return b"r" + struct.pack("!QQQq?", written, flushed, applied, micros_since_epoch(now), reply)


# --- pgoutput messages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # the LSN of the transaction's commit record: its position in commit order
    committed_at: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int  # just after the commit record: what to confirm once the transaction is stored
    committed_at: datetime


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: Row


@dataclass(frozen=True, slots=True)
class Update:
    relation_oid: int
    old: Row | None  # the whole old row (REPLICA IDENTITY FULL), or its key when the key changed
    old_is_key: bool
    new: Row


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old: Row
    old_is_key: bool


@dataclass(frozen=True, slots=True)
class Truncate:
    cascade: bool
    restart_identity: bool
    relation_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """A message written into the WAL with pg_logical_emit_message (sent with `messages 'true'`)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Ignored:
    """Origin and Type: nothing the change log needs."""

    kind: str


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | LogicalMessage | Ignored


INT16 = struct.Struct("!h")  # the wire's integers, big-endian (also read by app.services.row_literals)
INT32 = struct.Struct("!i")


class _Reader:
    """A cursor over one message's bytes; every read checks the bounds."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise ProtocolError("message ends early")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        values = struct.unpack_from(fmt, self.take(size))
        return tuple(int(v) for v in values)

    def byte(self) -> int:
        return self.take(1)[0]

    def string(self) -> str:
        end = self.data.find(b"\x00", self.offset)
        if end < 0:
            raise ProtocolError("string without its terminating NUL")
        text = self.data[self.offset : end].decode("utf-8")
        self.offset = end + 1
        return text

    def row(self) -> Row:
        # The hot path of decoding (every changed row): offsets and unpack_from, no intermediate slices.
        data, offset = self.data, self.offset
        try:
            (count,) = INT16.unpack_from(data, offset)
            offset += 2
            values: list[Value] = []
            append = values.append
            for _ in range(count):
                kind = data[offset]
                offset += 1
                if kind == 0x74:  # 't'
                    (length,) = INT32.unpack_from(data, offset)
                    offset += 4
                    end = offset + length
                    if length < 0 or end > len(data):
                        raise ProtocolError("message ends early")
                    append(data[offset:end].decode("utf-8"))
                    offset = end
                elif kind == 0x6E:  # 'n'
                    append(None)
                elif kind == 0x75:  # 'u'
                    append(UNCHANGED)
                elif kind == 0x62:  # 'b'
                    raise ProtocolError("binary tuple data was not requested")
                else:
                    raise ProtocolError(f"unknown tuple data kind {bytes([kind])!r}")
        except (struct.error, IndexError):
            raise ProtocolError("message ends early") from None
        self.offset = offset
        return tuple(values)

    def end(self) -> None:
        if self.offset != len(self.data):
            raise ProtocolError(f"{len(self.data) - self.offset} unread bytes after the message")


def parse_message(data: bytes) -> Message:
    """One pgoutput message (protocol version 1)."""
    reader = _Reader(data)
    kind = reader.take(1)
    message: Message
    # The changes first: they are nearly every message.
    if kind == b"I":
        (oid,) = reader.unpack("!I")
        if reader.take(1) != b"N":
            raise ProtocolError("Insert without its new tuple")
        message = Insert(oid, reader.row())
    elif kind == b"U":
        (oid,) = reader.unpack("!I")
        old: Row | None = None
        marker = reader.take(1)
        is_key = marker == b"K"
        if marker in (b"K", b"O"):
            old = reader.row()
            marker = reader.take(1)
        if marker != b"N":
            raise ProtocolError("Update without its new tuple")
        message = Update(oid, old, is_key, reader.row())
    elif kind == b"D":
        (oid,) = reader.unpack("!I")
        marker = reader.take(1)
        if marker not in (b"K", b"O"):
            raise ProtocolError("Delete without its old tuple or key")
        message = Delete(oid, reader.row(), marker == b"K")
    elif kind == b"B":
        final_lsn, committed, xid = reader.unpack("!QqI")
        message = Begin(final_lsn, timestamp(committed), xid)
    elif kind == b"C":
        (_flags,) = reader.unpack("!B")
        commit_lsn, end_lsn, committed = reader.unpack("!QQq")
        message = Commit(commit_lsn, end_lsn, timestamp(committed))
    elif kind == b"R":
        (oid,) = reader.unpack("!I")
        schema, name = reader.string(), reader.string()
        identity = chr(reader.byte())
        (count,) = reader.unpack("!h")
        columns = []
        for _ in range(count):
            flags = reader.byte()
            column_name = reader.string()
            type_oid, modifier = reader.unpack("!Ii")
            columns.append(Column(column_name, type_oid, modifier, bool(flags & 1)))
        message = Relation(oid, schema, name, identity, tuple(columns))
    elif kind == b"T":
        (count,) = reader.unpack("!I")
        options = reader.byte()
        oids = tuple(reader.unpack("!I")[0] for _ in range(count))
        message = Truncate(bool(options & 1), bool(options & 2), oids)
    elif kind == b"M":
        flags = reader.byte()  # no xid: protocol 1 does not stream transactions in progress
        (lsn,) = reader.unpack("!Q")
        prefix = reader.string()
        (length,) = reader.unpack("!i")
        message = LogicalMessage(bool(flags & 1), lsn, prefix, reader.take(length))
    elif kind in (b"O", b"Y"):
        return Ignored(kind.decode())
    else:
        raise ProtocolError(f"unknown pgoutput message {kind!r}")
    reader.end()
    return message
