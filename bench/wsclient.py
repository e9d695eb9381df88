"""A lean WebSocket subscriber (RFC 6455 over asyncio's Protocol), cheap enough for 100k+ frames/s.

A general client library spends tens of microseconds per frame (a task wake-up, a parsed JSON object);
at fan-out rates that would make the clients, not the server, the bottleneck on a 2-core machine. This one
does the handshake and the subscribe properly, then only walks frame headers: for each broadcast it reads
the row id out of the frame's bytes (`"record":{"id": N`) and notes when the data arrived. Everything
else a subscriber would do with a frame is the client's business, not the server's, so it is not timed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import struct
import time
from array import array
from typing import cast
from urllib.parse import urlencode, urlsplit

import orjson

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_RECORD_ID = b'"record":{"id": '  # jsonb renders keys shortest first: a table's `id` leads its record
_DIGITS = re.compile(rb"\d+")
_HEARTBEAT = b'"type":"heartbeat"'
_TEXT, _CLOSE, _PING, _PONG, _CONTINUATION = 0x1, 0x8, 0x9, 0xA, 0x0


class HandshakeError(Exception):
    """The server refused the upgrade or the subscription."""


class Subscription(asyncio.Protocol):
    """One connection subscribed to one channel, recording (row id, receive time) of every broadcast."""

    # What precedes the id in a frame's bytes (the fast path); a subclass for other frames changes it.
    id_marker = _RECORD_ID

    def __init__(self, host: str, path: str, channel: str, row_filter: str | None = None) -> None:
        self._host, self._path = host, path
        message = {"type": "subscribe", "channel": channel}
        if row_filter is not None:
            message["filter"] = row_filter
        self._subscribe = orjson.dumps(message)
        self._key = base64.b64encode(os.urandom(16))
        self._transport: asyncio.Transport | None = None
        self._upgraded = False
        self._pending = bytearray()  # bytes of an incomplete frame (or of the HTTP response)
        self._need = 0  # how many pending bytes the next complete frame needs, when known
        self._fragments: bytearray | None = None  # a fragmented text message being reassembled
        self.acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ids = array("q")
        self.received_at = array("d")
        self.other_frames = 0  # neither a broadcast nor a heartbeat (an error, say)
        self.close_code: int | None = None
        self.tag = 0  # the caller's label for this connection (say, which user's token it carries)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self._path.encode(), self._host.encode(), self._key)
        )

    def data_received(self, data: bytes) -> None:
        # One clock reading per read: every frame completed by these bytes arrived now.
        now = time.time()
        if self._pending:
            self._pending += data
            if len(self._pending) < self._need:
                return  # a large frame still arriving: nothing to parse yet
            buffer: bytes | bytearray = self._pending
        else:
            buffer = data
        if not self._upgraded:
            buffer = self._upgrade(buffer)
            if not self._upgraded:
                return
        position = self._frames(buffer, now)
        if position < len(buffer):
            self._pending = bytearray(buffer[position:])
        elif self._pending:
            self._pending = bytearray()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.acked.done():
            self.acked.set_exception(HandshakeError(f"connection lost before the ack: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)
        if self.close_code is None:
            self.close_code = 1006

    # Commands

    def reset(self) -> None:
        """Forget what was received so far (the start of a measurement)."""
        self.ids = array("q")
        self.received_at = array("d")
        self.other_frames = 0

    def close(self, *, abort: bool = False) -> None:
        """Send a close frame (the server answers and drops the TCP connection), or just drop it."""
        if self._transport is None or self._transport.is_closing():
            return
        if abort:
            self._transport.abort()
        else:
            self._send(_CLOSE, struct.pack("!H", 1000))

    def send_text(self, body: bytes) -> None:
        """One text frame to the server (a client message)."""
        self._send(_TEXT, body)

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing() and self.close_code is None

    # Internals

    def _upgrade(self, buffer: bytes | bytearray) -> bytes | bytearray:
        """Consume the HTTP 101 response; returns the bytes after it (frames), or keeps waiting."""
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self._pending = bytearray(buffer)
            return b""
        head = bytes(buffer[:end]).split(b"\r\n")
        accept = base64.b64encode(hashlib.sha1(self._key + _GUID).digest())  # noqa: S324 - RFC 6455
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head[1:])}
        if not head[0].startswith(b"HTTP/1.1 101") or headers.get(b"sec-websocket-accept") != accept:
            self._fail(HandshakeError(f"upgrade refused: {head[0]!r}"))
            return b""
        self._upgraded = True
        self._send(_TEXT, self._subscribe)
        return buffer[end + 4 :]

    def _frames(self, buffer: bytes | bytearray, now: float) -> int:
        """Handle every complete frame in `buffer`; returns where the incomplete rest begins."""
        position, size = 0, len(buffer)
        self._need = 0
        while size - position >= 2:
            first, length = buffer[position], buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                start = position + 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                start = position + 10
            end = start + length
            if end > size:
                self._need = end - position
                break
            opcode = first & 0x0F
            if opcode == _TEXT and first & 0x80 and self._fragments is None:
                self._text(buffer, start, end, now)
            else:
                self._control_or_fragment(first, opcode, bytes(buffer[start:end]), now)
            position = end
        return position

    def _text(self, buffer: bytes | bytearray, start: int, end: int, now: float) -> None:
        """A whole text frame: a broadcast's row id without parsing the JSON, anything else parsed."""
        found = buffer.find(self.id_marker, start, end)
        if found >= 0 and self.acked.done():
            digits = _DIGITS.match(buffer, found + len(self.id_marker), end)
            if digits is not None:
                self.ids.append(int(digits[0]))
                self.received_at.append(now)
                return
        if buffer.find(_HEARTBEAT, start, end) >= 0:
            return
        self._message(orjson.loads(bytes(buffer[start:end])), now)

    def _message(self, message: dict[str, object], now: float) -> None:
        """The slow path: an ack, an error, or a broadcast whose record does not lead with `id`."""
        kind = message.get("type")
        if not self.acked.done():
            if kind == "ack":
                self.acked.set_result(None)
            elif kind != "heartbeat":
                self._fail(HandshakeError(f"subscribe refused: {message}"))
            return
        payload = message.get("payload")
        record = payload.get("record") if isinstance(payload, dict) else None
        if kind == "broadcast" and isinstance(record, dict) and isinstance(record.get("id"), int):
            self.ids.append(record["id"])
            self.received_at.append(now)
        elif kind != "heartbeat":
            self.other_frames += 1

    def _control_or_fragment(self, first: int, opcode: int, body: bytes, now: float) -> None:
        if opcode == _CLOSE:
            self.close_code = struct.unpack("!H", body[:2])[0] if len(body) >= 2 else 1005
            if self._transport is not None:
                self._transport.close()
        elif opcode == _PING:
            self._send(_PONG, body)
        elif opcode in (_TEXT, _CONTINUATION):
            self._fragments = (self._fragments or bytearray()) + body
            if first & 0x80:
                whole, self._fragments = bytes(self._fragments), None
                self._text(whole, 0, len(whole), now)
        elif opcode != _PONG:
            self.other_frames += 1  # binary: not part of the protocol

    def _send(self, opcode: int, body: bytes) -> None:
        """A masked frame, as a client must send."""
        if self._transport is None or self._transport.is_closing():
            return
        mask = os.urandom(4)
        length = len(body)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        key = (mask * (length // 4 + 1))[:length]
        masked = (int.from_bytes(body, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
        self._transport.write(header + mask + masked)

    def _fail(self, error: Exception) -> None:
        if not self.acked.done():
            self.acked.set_exception(error)
        if self._transport is not None:
            self._transport.abort()


async def subscribe(
    url: str,
    channel: str,
    token: str | None = None,
    tag: int = 0,
    factory: type[Subscription] = Subscription,
    row_filter: str | None = None,
) -> Subscription:
    """Connect to `url` (ws://host:port/path), subscribe to `channel`, return once the server acked.

    With `token`, it is sent as `?token=` (the connection acts as that token's role and claims);
    `factory`: the kind of connection (a subclass that reads other frames); with `row_filter`, the
    subscribe carries it as its `filter`. Unbounded: callers wrap it in
    `asyncio.timeout`."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/") + (f"?{urlencode({'token': token})}" if token else "")
    loop = asyncio.get_running_loop()
    _, subscription = await loop.create_connection(
        lambda: factory(f"{host}:{port}", path, channel, row_filter), host, port
    )
    subscription.tag = tag
    try:
        await subscription.acked
    except BaseException:
        subscription.close(abort=True)
        raise
    return subscription
