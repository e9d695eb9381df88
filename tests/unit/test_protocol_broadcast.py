"""The protocol of broadcast channels (pure): channel names, broadcast/track/untrack messages, and the
frames of messages and presence."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.protocol import (
    BroadcastChannel,
    BroadcastRequest,
    ChannelRequest,
    ProtocolError,
    TrackRequest,
    UntrackRequest,
    encode_message,
    encode_presence_diff,
    encode_presence_state,
    parse_channel,
    parse_request,
)


def message(**fields: Any) -> str:
    return json.dumps(fields)


def test_broadcast_channel_names() -> None:
    assert parse_channel("broadcast:room1") == BroadcastChannel("room1")
    assert parse_channel("broadcast:a:b.c d") == BroadcastChannel("a:b.c d")
    assert parse_channel("broadcast:" + "é" * 100).name == "broadcast:" + "é" * 100  # 200 bytes


@pytest.mark.parametrize("topic", ["", "x" * 201, "é" * 101, "a\x00b", "tab\there", "\x7f", "\x9f"])
def test_bad_broadcast_channel_names(topic: str) -> None:
    with pytest.raises(ProtocolError, match="invalid channel"):
        parse_channel("broadcast:" + topic)


@given(st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=50))
def test_every_name_without_control_characters_round_trips(topic: str) -> None:
    if len(topic.encode()) <= 200:
        assert parse_channel(BroadcastChannel(topic).name) == BroadcastChannel(topic)


def test_subscribe_with_self() -> None:
    request = parse_request(message(type="subscribe", channel="broadcast:r", self=True, since="3", ref=1))
    assert request == ChannelRequest("subscribe", BroadcastChannel("r"), 1, 3, True)
    assert parse_request(message(type="subscribe", channel="broadcast:r")) == ChannelRequest(
        "subscribe", BroadcastChannel("r")
    )


def test_broadcast_track_untrack() -> None:
    sent = parse_request(
        message(type="broadcast", channel="broadcast:r", event="e", payload={"a": [1]}, ref="x")
    )
    assert sent == BroadcastRequest(BroadcastChannel("r"), "e", '{"a":[1]}', "x")
    assert parse_request(message(type="broadcast", channel="broadcast:r", event="e")).payload == "null"  # type: ignore[union-attr]
    assert parse_request(message(type="track", channel="broadcast:r", state={"s": 1})) == TrackRequest(
        BroadcastChannel("r"), '{"s":1}'
    )
    assert parse_request(message(type="track", channel="broadcast:r")) == TrackRequest(
        BroadcastChannel("r"), "{}"
    )
    assert parse_request(message(type="untrack", channel="broadcast:r", ref=2)) == UntrackRequest(
        BroadcastChannel("r"), 2
    )


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"type": "broadcast", "channel": "table:public.t", "event": "e"}, "needs a broadcast channel"),
        ({"type": "broadcast", "channel": "broadcast:r"}, "needs 'event'"),
        ({"type": "broadcast", "channel": "broadcast:r", "event": 5}, "needs 'event'"),
        ({"type": "broadcast", "channel": "broadcast:r", "event": "a\nb"}, "control character"),
        ({"type": "track", "channel": "broadcast:r", "state": "s"}, "JSON object"),
        ({"type": "untrack"}, "missing channel"),
    ],
)
def test_malformed(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ProtocolError, match=words) as caught:
        parse_request(json.dumps({**fields, "ref": "r"}))
    assert caught.value.ref == "r"


def test_a_payload_nested_past_what_can_be_written_again_is_refused() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    with pytest.raises(ProtocolError, match="nested too deeply"):
        parse_request(
            json.dumps({"type": "broadcast", "channel": "broadcast:r", "event": "e", "payload": deep})
        )


def test_message_frames() -> None:
    assert orjson.loads(encode_message('broadcast:"r"', "é", '{"a":1}')) == {
        "type": "broadcast",
        "channel": 'broadcast:"r"',
        "event": "é",
        "payload": {"a": 1},
    }
    assert orjson.loads(encode_message("broadcast:r", "e", "null", 2**63 - 1))["id"] == 2**63 - 1


def test_presence_frames() -> None:
    entries = {"ann": [("p1", '{"n":1}'), ("p2", "{}")]}
    assert orjson.loads(encode_presence_state("broadcast:r", entries)) == {
        "type": "presence_state",
        "channel": "broadcast:r",
        "presences": {"ann": [{"presence_id": "p1", "state": {"n": 1}}, {"presence_id": "p2", "state": {}}]},
    }
    diff = orjson.loads(encode_presence_diff("broadcast:r", {}, entries, {"bob": [("p3", "[]")]}))
    assert diff["joins"] == {} and diff["updates"]["ann"][0] == {"presence_id": "p1", "state": {"n": 1}}
    assert diff["leaves"] == {"bob": [{"presence_id": "p3", "state": []}]}


def test_self_is_ignored_on_table_channels_like_any_unknown_field() -> None:
    for value in (True, "yes", None):
        request = parse_request(json.dumps({"type": "subscribe", "channel": "table:a.b", "self": value}))
        assert isinstance(request, ChannelRequest) and request.receive_own is False
    assert parse_request(message(type="subscribe", channel="broadcast:r", self=None)).receive_own is False  # type: ignore[union-attr]
