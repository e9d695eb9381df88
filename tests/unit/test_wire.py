"""Frames built once for every subscriber must be exactly what websockets itself would send."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from app.wire import text_frame


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 1_000_000])
def test_text_frames_of_every_length_class_parse_back(size: int) -> None:
    payload = ("é" if size % 2 else "x") * (size // 2 if size % 2 else size)
    frame = parse(text_frame(payload))
    assert frame.opcode is Opcode.TEXT and frame.fin
    assert frame.data.decode() == payload


def test_the_frame_matches_what_websockets_serializes() -> None:
    payload = '{"type":"heartbeat"}'
    expected = Frame(Opcode.TEXT, payload.encode()).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected
