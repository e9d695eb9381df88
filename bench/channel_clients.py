"""Connections to `broadcast:` channels for the benchmark: a receiver of clients' broadcasts, and a
presence member that counts who is present and what presence costs it in bytes.

Both keep the lean client's fast path (bench/wsclient.py): they find what they need in a frame's bytes
without parsing its JSON, so that 1,000 connections on a shared 2-core machine measure the server.
"""

from __future__ import annotations

import time

import orjson

from bench import wsclient

# The benchmark sender's payload leads with its message number: {"id":N,"t":<send time>,...}.
_PAYLOAD_ID = b'"payload":{"id":'
# Presence frames as the server writes them (orjson: keys in the order given, no spaces).
_DIFF = b'{"type":"presence_diff"'
_STATE = b'{"type":"presence_state"'
_ENTRY = b'"presence_id":'
_UPDATES = b'"updates":'
_LEAVES = b'"leaves":'


class BroadcastReceiver(wsclient.Subscription):
    """A subscriber of a broadcast channel, recording (message number, receive time) of every broadcast
    (the sender's own clock reading is in the payload, and in the sender's report)."""

    id_marker = _PAYLOAD_ID


def broadcast_frame(channel: bytes, number: int, sent_at: float, padding: bytes) -> bytes:
    """A client's broadcast carrying its number and send time (no ref: the cheap path, no ack)."""
    return b'{"type":"broadcast","channel":%s,"event":"bench","payload":{"id":%d,"t":%r,"pad":"%s"}}' % (
        channel,
        number,
        sent_at,
        padding,
    )


class PresenceMember(wsclient.Subscription):
    """A subscriber of a broadcast channel that tracks a presence and counts the channel's presences
    from its presence_state and presence_diff frames, with the bytes and frames those diffs took."""

    def __init__(self, host: str, path: str, channel: str, row_filter: str | None = None) -> None:
        super().__init__(host, path, channel, row_filter)
        self.channel_json = orjson.dumps(channel)
        self.members = 0
        self.target = 0
        self.full_at: float | None = None  # when `members` first reached `target`
        self.diff_bytes = 0
        self.diff_frames = 0
        self.state_bytes = 0
        self.errors: list[str] = []

    def expect(self, target: int) -> None:
        """Start counting afresh towards `target` presences (the start of a measurement)."""
        self.target, self.full_at = target, None
        self.diff_bytes = self.diff_frames = 0
        self.errors = []
        self._reached(time.time())

    def track(self, number: int) -> None:
        self.send_text(b'{"type":"track","channel":%s,"state":{"n":%d}}' % (self.channel_json, number))

    def _text(self, buffer: bytes | bytearray, start: int, end: int, now: float) -> None:
        if self.acked.done() and buffer.startswith(_DIFF, start):
            updates = buffer.find(_UPDATES, start, end)
            leaves = buffer.find(_LEAVES, updates, end)
            # Each entry has one presence_id; states here ({"n": i}) contain none.
            self.members += buffer.count(_ENTRY, start, updates) - buffer.count(_ENTRY, leaves, end)
            self.diff_bytes += end - start
            self.diff_frames += 1
            self._reached(now)
        elif self.acked.done() and buffer.startswith(_STATE, start):
            self.members = buffer.count(_ENTRY, start, end)
            self.state_bytes = end - start
            self._reached(now)
        else:
            super()._text(buffer, start, end, now)

    def _message(self, message: dict[str, object], now: float) -> None:
        if message.get("type") == "error" and self.acked.done():
            self.errors.append(str(message.get("code")))
        super()._message(message, now)

    def _reached(self, now: float) -> None:
        if self.full_at is None and self.target and self.members >= self.target:
            self.full_at = now
