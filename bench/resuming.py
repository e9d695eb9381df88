"""A subscriber that holds one table channel for ever: it reconnects after any loss and resumes with `since`.

Built to be held 25,000 at a time in one client process: a connection's whole state is one object
with slots (a few hundred bytes), no task while it is connected and idle, and what it received kept as
a summary that proves exactly-once delivery against the log without keeping the ids: a single writer
commits row ids in increasing order, so a client that saw only increasing ids (`disorder` 0), `count` of
them, from `first_row` to `last_row`, received exactly the log's rows in that range when the log holds
`count` rows there (and `row_sum` cross-checks it). Reconnects use full-jitter exponential backoff
(AWS's "exponential backoff and jitter"; the SDK does the same) after a refusal, a failure or a timeout.
Each attempt's outcome is counted (`Fleet.outcomes`), and how long the one that went live spent in
connect() and waiting for the 101: a connect() of a second or more is a SYN the kernel dropped and the
client sent again (1, 3, 7, 15, 31 s), which no server-side queue explains.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import re
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import orjson

from bench.sources import bound_socket

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CHANGE_ID = re.compile(rb'"id":(\d+)')  # a broadcast's change id: its first "id" (before the payload)
_ROW_ID = re.compile(rb'"record":\{"id": (\d+)')  # jsonb renders `id` first in a table's record
_SINCE = re.compile(rb'"since":"(\d+)"')
_RETRY_AFTER_FIELD = re.compile(rb'"retry_after":(\d+)')
_RETRY_AFTER_HEADER = re.compile(rb"(?im)^retry-after:\s*(\d+)\s*$")
MAX_RETRY_AFTER = 60.0  # the SDKs' cap
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA
# When connect() returns after its SYN was sent again n times (Linux: 1 s, then doubling), n is the
# count of these it took at least (a little early, for the first SYN's own time).
SYN_RETRIES_AT = (0.9, 2.9, 6.9, 14.9, 30.9)


def connect_outcome(seconds: float) -> str:
    """The outcome name of a connect() that took `seconds`: `connected_syn0` .. `connected_syn5`."""
    return f"connected_syn{sum(seconds >= edge for edge in SYN_RETRIES_AT)}"


@dataclass
class Fleet:
    """What one client process's resuming clients share: where to connect, how to back off, and counts."""

    host: str
    port: int
    channel: str
    sources: list[str]
    backoff_base: float = 0.2  # seconds: the first retry waits up to this
    backoff_cap: float = 10.0
    attempt_timeout: float = 10.0  # from connect() to the subscribe's ack
    attempts: int = 0
    failures: int = 0  # connect refused or failed, closed or timed out before the ack
    refusals: int = 0  # an HTTP answer other than 101, or an error frame answering the subscribe
    errors: list[str] = field(default_factory=list)  # the first few, for the report
    pending: int = 0  # attempts under way
    # Their tasks: the loop holds only weak references to a task, and an attempt whose task is collected
    # mid-connect would never settle (a client stranded with no retry due).
    attempt_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever `pending` drops
    # Per attempt: refused (RST), connect_timeout, connect_error, connected_synN (connect() took N SYN
    # retransmissions), then http_503 / http_other / error_frame / lost_before_upgrade / lost_before_ack
    # / ack_timeout, or live.
    outcomes: Counter[str] = field(default_factory=Counter)

    def note_error(self, text: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(text[:300])


class ResumingClient(asyncio.Protocol):
    """One client; also the protocol of each of its successive connections."""

    __slots__ = (
        "attempt_started",
        "buffer",
        "connect_s",
        "connected_at",
        "count",
        "disorder",
        "ending",
        "first_row",
        "fleet",
        "generation",
        "index",
        "key",
        "last_error",
        "last_received_at",
        "last_row",
        "live",
        "live_at",
        "lost_at",
        "reconnects",
        "retry_after",
        "retry_due",
        "row_sum",
        "since",
        "stopped",
        "transport",
        "tries",
        "upgraded",
        "upgraded_at",
        "wait_s",
    )  # fmt: skip

    def __init__(self, fleet: Fleet, index: int) -> None:
        self.fleet, self.index = fleet, index
        self.transport: asyncio.Transport | None = None
        self.live = self.upgraded = False
        self.key = b""
        self.buffer = b""
        self.since: int | None = None  # the change id to resume after: the last received, or the ack's
        self.tries = 0  # consecutive failed attempts (the backoff's exponent)
        self.count = self.first_row = self.last_row = self.row_sum = self.disorder = 0
        self.last_received_at = self.live_at = self.lost_at = 0.0
        self.reconnects = self.generation = 0
        self.stopped = False
        # monotonic clock: this attempt's start, its connect() return and its 101
        self.attempt_started = self.connected_at = self.upgraded_at = 0.0
        self.connect_s = self.wait_s = 0.0  # of the attempt that went live: in connect(), then to the 101
        self.ending = ""  # why the current connection is being dropped, when the client drops it
        self.retry_after = 0.0  # what the server's last refusal asked to wait (s), as the SDKs honour it
        # For a client that is not live at the end: why its last attempt failed, when its next is due.
        self.last_error = ""
        self.retry_due = 0.0

    # Connecting

    def start(self) -> None:
        """One attempt, now (its outcome schedules the next, if any)."""
        if self.stopped:
            return
        self.fleet.attempts += 1
        self.fleet.pending += 1
        self.generation += 1
        self.attempt_started = time.monotonic()
        self.ending = ""
        task = asyncio.get_running_loop().create_task(self._guarded_attempt())
        self.fleet.attempt_tasks.add(task)
        task.add_done_callback(self.fleet.attempt_tasks.discard)

    async def _guarded_attempt(self) -> None:
        try:
            await self._attempt()
        except Exception as error:  # before a transport: a client whose attempt dies would be stranded
            self.fleet.outcomes[f"attempt_error_{type(error).__name__}"] += 1
            self._failed(f"attempt: {error!r}")

    async def _attempt(self) -> None:
        fleet = self.fleet
        loop = asyncio.get_running_loop()
        try:
            sock = bound_socket(fleet.sources[self.index % len(fleet.sources)])
        except OSError as error:
            self._failed(f"bind: {error}")
            return
        try:
            async with asyncio.timeout(fleet.attempt_timeout):
                await loop.sock_connect(sock, (fleet.host, fleet.port))
        except (OSError, TimeoutError) as error:
            sock.close()
            if isinstance(error, ConnectionRefusedError):
                fleet.outcomes["refused"] += 1
            elif isinstance(error, TimeoutError):
                fleet.outcomes["connect_timeout"] += 1
            else:
                fleet.outcomes[f"connect_error_{type(error).__name__}"] += 1
            self._failed(f"connect: {error!r}")
            return
        self.connected_at = time.monotonic()
        fleet.outcomes[connect_outcome(self.connected_at - self.attempt_started)] += 1
        try:
            async with asyncio.timeout(fleet.attempt_timeout):
                await loop.create_connection(lambda: self, sock=sock)
        except (OSError, TimeoutError) as error:
            fleet.outcomes[f"made_error_{type(error).__name__}"] += 1
            self._failed(f"connection: {error!r}")
            return
        finally:
            # From here the transport owns the descriptor: uvloop closes it with its handle, also when the
            # connection fails or is aborted before create_connection returns (a server's fast 503 read
            # and the transport aborted before uvloop ties the socket object to it). The socket object
            # must never close that number itself: it would close whatever socket has reused it (seen in
            # storms: other clients' connect() failing with EBADF, their attempts dying, the clients
            # stranded). detach() forgets the number without closing it.
            sock.detach()
        # Connected: the ack must come within the rest of the attempt's time, or the attempt is dropped.
        loop.call_later(fleet.attempt_timeout, self._expire, self.generation)

    def _expire(self, generation: int) -> None:
        if generation == self.generation and not self.live and self.transport is not None:
            self.ending = "ack_timeout"
            self.transport.abort()  # connection_lost schedules the retry

    def _failed(self, why: str) -> None:
        """An attempt that made no connection: retry after a backoff."""
        self.last_error = why[:160]
        self.fleet.failures += 1
        self.fleet.note_error(why)
        self._settled()
        self._retry()

    def _settled(self) -> None:
        self.fleet.pending -= 1
        self.fleet.changed.set()

    def _retry(self) -> None:
        self.tries += 1
        ceiling = min(self.fleet.backoff_cap, self.fleet.backoff_base * 2 ** min(self.tries - 1, 16))
        # As the SDKs: at least what the refusal asked (Retry-After, retry_after), plus the jitter.
        delay, self.retry_after = self.retry_after + random.uniform(0, ceiling), 0.0
        self.retry_due = time.monotonic() + delay
        asyncio.get_running_loop().call_later(delay, self.start)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.upgraded = self.live = False
        self.buffer = b""
        self.key = base64.b64encode(os.urandom(16))
        self.transport.write(
            b"GET /realtime HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.fleet.host.encode(), self.fleet.port, self.key)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.live:
            self.live = False
            self.lost_at = time.time()
            self.tries = 0
            self.reconnects += 1
            self.start()  # the first try of a lost connection is at once: jitter comes with its failures
        elif not self.stopped:
            lost = "lost_before_ack" if self.upgraded else "lost_before_upgrade"
            self.last_error = self.ending or f"{lost}_{'eof' if exc is None else type(exc).__name__}"
            self.fleet.outcomes[self.last_error] += 1
            self.fleet.failures += 1
            self._settled()
            self._retry()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not self._upgrade(buffer[:end]):
                return
            buffer = buffer[end + 4 :]
        self.buffer = buffer[self._frames(buffer) :]

    # Internals

    def _upgrade(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        accept = base64.b64encode(hashlib.sha1(self.key + _GUID).digest())  # noqa: S324 - RFC 6455
        if not lines[0].startswith(b"HTTP/1.1 101") or accept not in head:
            self.ending = "http_503" if lines[0].startswith(b"HTTP/1.1 503") else "http_other"
            if (hint := _RETRY_AFTER_HEADER.search(head)) is not None:
                self.retry_after = min(MAX_RETRY_AFTER, float(hint[1]))
            self._refused(f"upgrade refused: {lines[0][:100]!r}")
            return False
        self.upgraded = True
        self.upgraded_at = time.monotonic()
        message: dict[str, object] = {"type": "subscribe", "channel": self.fleet.channel}
        if self.since is not None:
            message["since"] = str(self.since)
        self._send(_TEXT, orjson.dumps(message))
        return True

    def _refused(self, why: str) -> None:
        self.fleet.refusals += 1
        self.fleet.note_error(why)
        if self.transport is not None:
            self.transport.abort()  # connection_lost counts the failure and retries

    def _frames(self, buffer: bytes) -> int:
        position, size = 0, len(buffer)
        while size - position >= 2:
            first, length = buffer[position], buffer[position + 1] & 0x7F
            start = position + 2
            if length >= 126:
                width = 2 if length == 126 else 8
                if size - position < 2 + width:
                    break
                length = int.from_bytes(buffer[start : start + width], "big")
                start += width
            end = start + length
            if end > size:
                break
            opcode = first & 0x0F
            if opcode == _TEXT:
                self._text(buffer[start:end])
            elif opcode == _PING:
                self._send(_PONG, buffer[start:end])
            elif opcode == _CLOSE and self.transport is not None:
                self.transport.close()
            position = end
        return position

    def _text(self, frame: bytes) -> None:
        if self.live and frame.startswith(b'{"type":"broadcast"'):
            change, row = _CHANGE_ID.search(frame), _ROW_ID.search(frame)
            if change is None or row is None:
                return
            row_id = int(row[1])
            if row_id <= self.last_row:
                self.disorder += 1
                return
            self.since = int(change[1])
            if not self.count:
                self.first_row = row_id
            self.count += 1
            self.last_row = row_id
            self.row_sum += row_id
            self.last_received_at = time.time()
        elif frame.startswith(b'{"type":"ack"') and not self.live:
            if self.since is None and (since := _SINCE.search(frame)) is not None:
                self.since = int(since[1])
            self.live = True
            self.live_at = time.time()
            self.connect_s = self.connected_at - self.attempt_started
            self.wait_s = self.upgraded_at - self.connected_at
            self.fleet.outcomes["live"] += 1
            self.tries = 0
            self._settled()
        elif frame.startswith(b'{"type":"error"'):
            if (hint := _RETRY_AFTER_FIELD.search(frame)) is not None:
                self.retry_after = min(MAX_RETRY_AFTER, float(hint[1]))
            if self.live and b'"subscribe_failed"' in frame:
                # The subscription was dropped after its ack (its replay could not read the log: the
                # database was busy): subscribe again from `since` after a backoff, as the SDKs do, by
                # reconnecting. Counted as an attempt that failed.
                self.live = False
                self.fleet.pending += 1
                self.ending = "dropped_after_ack"
                self._refused(f"error frame after the ack: {frame[:200]!r}")
            elif self.live:  # the connection stays: counted and kept for the report
                self.fleet.refusals += 1
                self.fleet.note_error(f"error frame: {frame[:200]!r}")
            else:
                self.ending = "error_frame"
                self._refused(f"error frame: {frame[:200]!r}")

    def _send(self, opcode: int, body: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        length = len(body)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        else:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        key = (mask * (length // 4 + 1))[:length]
        masked = (int.from_bytes(body, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
        self.transport.write(header + mask + masked)

    def close(self) -> None:
        """Drop the connection for good (no reconnect)."""
        self.live = False
        self.stopped = True
        self.generation += 1
        if self.transport is not None:
            self.transport.abort()


def describe_stranded(client: ResumingClient) -> str:
    """What a client that is not live is doing: a storm's report shows a few, so that a client stuck
    without a retry due (a bug of its own) is told apart from one the server keeps refusing."""
    now = time.monotonic()
    if client.transport is not None:
        state = "upgraded, no ack yet" if client.upgraded else "connected, no 101 yet"
    elif client.retry_due > client.attempt_started:  # a retry was scheduled after the last attempt
        due = client.retry_due - now
        state = f"retry in {due:.1f} s" if due >= 0 else f"retry overdue by {-due:.1f} s"
    elif client.connected_at > client.attempt_started:
        state = "connected, transport not made yet"
    else:
        state = "in connect()"
    return (
        f"{state}; last attempt started {now - client.attempt_started:.0f} s ago, {client.tries} failed in "
        f"a row; last failure: {client.last_error or '-'}"
    )
