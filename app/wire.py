"""A direct path for broadcasts: the same pre-built WebSocket frame written to every subscriber's socket.

Through ASGI, every send to every subscriber re-encodes the text and builds a frame in
`websockets`' protocol object, through several coroutine layers. A broadcast is identical for all of a
channel's subscribers, so the hub builds its frame bytes once (`text_frame`) and `FrameWriter` writes them
straight to a transport when that is safe: the connection is open, its transport is not paused, and no
extension (permessage-deflate) transforms frames. Otherwise the frame takes the ASGI path, queued behind
whatever is already waiting, so order and backpressure are unchanged.
"""

from __future__ import annotations

import struct

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

FRAME_WRITER = "fluxbase.frame_writer"


def text_frame(payload: str) -> bytes:
    """An unfragmented, unmasked text frame (servers never mask) carrying `payload`."""
    data = payload.encode()
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + data
    return struct.pack("!BBQ", 0x81, 127, size) + data


class FrameWriter:
    """Writes complete frames to one connection's transport, when nothing makes that unsafe."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol

    def try_write(self, frame: bytes) -> bool:
        protocol = self._protocol
        if (
            not protocol.handshake_complete
            or protocol.close_sent
            or protocol.disconnected
            or not protocol.writable.is_set()
            or protocol.conn.state is not State.OPEN
            or protocol.conn.extensions
            or protocol.transport.is_closing()
        ):
            return False
        protocol.transport.write(frame)
        return True


class DirectWriteProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, offering a FrameWriter to the application in the scope."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][FRAME_WRITER] = FrameWriter(self)
