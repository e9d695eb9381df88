"""A stand-in for app.wire.FrameWriter in tests without sockets."""

from __future__ import annotations


class RecordingWriter:
    """Records what would go to the socket, or refuses (a paused transport) when `open` is False."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.open = True

    def try_write(self, frame: bytes) -> bool:
        if self.open:
            self.writes.append(frame)
        return self.open
