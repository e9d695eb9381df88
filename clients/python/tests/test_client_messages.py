"""The client's message layer: server frames parsed into dataclasses, requests encoded (pure, no socket).

Frames come from the server's own encoders (app.protocol) where it has them, so a change of the wire
format on one side fails here."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.protocol import (
    BroadcastEncoder,
    TableChannel,
    encode_ack,
    encode_error,
    encode_message,
    encode_presence_diff,
    encode_presence_state,
    encode_reply,
)
from fluxbase_realtime_client import (
    Ack,
    Broadcast,
    Change,
    Error,
    Heartbeat,
    MalformedMessage,
    PresenceDiff,
    PresenceEntry,
    PresenceState,
    Unknown,
    parse_server_message,
)
from fluxbase_realtime_client.requests import (
    SubscribeOptions,
    encode_access_token,
    encode_broadcast,
    encode_subscribe,
    encode_track,
    encode_unsubscribe,
    encode_untrack,
)

ENCODER = BroadcastEncoder(TableChannel("public", "orders"))


def test_insert_update_delete_from_the_servers_encoder() -> None:
    insert = parse_server_message(ENCODER.encode(41, "INSERT", '{"id":1,"total":9.5}', None))
    update = parse_server_message(ENCODER.encode(42, "UPDATE", '{"id":1,"total":10}', '{"id":1,"total":9.5}'))
    delete = parse_server_message(ENCODER.encode(2**62, "DELETE", None, '{"id":1}'))
    channel = "table:public.orders"
    assert insert == Change(41, "INSERT", "public", "orders", {"id": 1, "total": 9.5}, None, channel)
    assert update == Change(
        42, "UPDATE", "public", "orders", {"id": 1, "total": 10}, {"id": 1, "total": 9.5}, channel
    )
    assert delete == Change(2**62, "DELETE", "public", "orders", None, {"id": 1}, channel)


def test_a_truncate_and_a_truncated_partition_from_the_servers_encoder() -> None:
    channel = "table:public.orders"
    whole = parse_server_message(ENCODER.encode(7, "TRUNCATE", None, None))
    one = parse_server_message(
        ENCODER.encode(8, "TRUNCATE", '{"schema":"public","table":"orders_2026"}', None)
    )
    assert whole == Change(7, "TRUNCATE", "public", "orders", None, None, channel)
    assert one == Change(
        8, "TRUNCATE", "public", "orders", None, None, channel, partition=("public", "orders_2026")
    )
    with pytest.raises(MalformedMessage):
        parse_server_message(ENCODER.encode(9, "TRUNCATE", '"orders_2026"', None))


def test_a_change_of_a_subscription_carries_its_id() -> None:
    frame = json.loads(ENCODER.encode(7, "INSERT", "{}", None)) | {"subscription": "list"}
    change = parse_server_message(json.dumps(frame))
    assert isinstance(change, Change) and change.subscription == "list" and change.id == 7


def test_acks_errors_and_heartbeats_from_the_servers_encoders() -> None:
    assert parse_server_message(encode_ack("table:public.orders", "c1")) == Ack("table:public.orders", "c1")
    assert parse_server_message(encode_ack("table:public.orders")) == Ack("table:public.orders")
    assert parse_server_message(encode_reply(9)) == Ack(ref=9)
    gap = encode_error("changes after 3 are no longer retained", channel="table:a.b", code="replay_gap")
    assert parse_server_message(gap) == Error(
        "changes after 3 are no longer retained", "replay_gap", "table:a.b"
    )
    assert parse_server_message(encode_error("nope", ref="c2")) == Error("nope", ref="c2")
    assert parse_server_message('{"type":"heartbeat"}') == Heartbeat()


def test_an_ack_may_carry_the_position_a_subscription_starts_after() -> None:
    ack = parse_server_message('{"type":"ack","channel":"table:a.b","ref":"c1","since":"9007199254740993"}')
    assert ack == Ack("table:a.b", "c1", since=9007199254740993)


def test_broadcasts_from_clients_and_from_the_database() -> None:
    client = parse_server_message(
        '{"type":"broadcast","channel":"broadcast:room1","event":"cursor","payload":{"x":1}}'
    )
    database = parse_server_message(
        '{"type":"broadcast","channel":"broadcast:room1","id":57,"event":"cursor","payload":[1,2]}'
    )
    assert client == Broadcast("broadcast:room1", "cursor", {"x": 1})
    assert database == Broadcast("broadcast:room1", "cursor", [1, 2], id=57)


def test_presence_state_and_diff() -> None:
    state = parse_server_message(
        '{"type":"presence_state","channel":"broadcast:r","presences":'
        '{"user-1":[{"presence_id":"p1","state":{"name":"Ann"}},{"presence_id":"p2","state":{}}]}}'
    )
    diff = parse_server_message(
        '{"type":"presence_diff","channel":"broadcast:r","joins":{"u2":[{"presence_id":"p3","state":1}]},'
        '"updates":{},"leaves":{"user-1":[{"presence_id":"p1","state":{"name":"Ann"}}]}}'
    )
    assert state == PresenceState(
        "broadcast:r", {"user-1": (PresenceEntry("p1", {"name": "Ann"}), PresenceEntry("p2", {}))}
    )
    assert diff == PresenceDiff(
        "broadcast:r",
        joins={"u2": (PresenceEntry("p3", 1),)},
        updates={},
        leaves={"user-1": (PresenceEntry("p1", {"name": "Ann"}),)},
    )


def test_an_unknown_type_is_kept_not_fatal() -> None:
    message = parse_server_message('{"type":"system","note":"hello"}')
    assert message == Unknown("system", {"type": "system", "note": "hello"})


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1,2]",
        '{"no":"type"}',
        '{"type":5}',
        '{"type":"error"}',
        '{"type":"ack","ref":true}',
        '{"type":"ack","ref":1.5}',
        '{"type":"broadcast","channel":"table:a.b","payload":{"type":"INSERT","table":"b","schema":"a"}}',
        '{"type":"broadcast","channel":"table:a.b","id":-1,"payload":{}}',
        '{"type":"broadcast","channel":"table:a.b","id":1,"payload":[]}',
        '{"type":"broadcast","channel":"table:a.b","id":1,"payload":{"type":"INSERT","table":"b"}}',
        '{"type":"broadcast","channel":"table:a.b","id":1,'
        '"payload":{"type":"INSERT","table":"b","schema":"a","record":[1]}}',
        '{"type":"broadcast","channel":"broadcast:r","payload":{}}',
        '{"type":"broadcast","channel":"broadcast:r","event":"e","id":"x1"}',
        '{"type":"presence_state","channel":"broadcast:r","presences":[]}',
        '{"type":"presence_state","channel":"broadcast:r","presences":{"k":{}}}',
        '{"type":"presence_diff","channel":"broadcast:r","joins":{"k":[{"state":1}]}}',
    ],
)
def test_malformed_frames_are_refused(frame: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_server_message(frame)


@given(st.text() | st.binary())
def test_no_frame_raises_anything_but_malformed(frame: str | bytes) -> None:
    try:
        parse_server_message(frame)
    except MalformedMessage:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from(["type", "channel", "id", "ref", "payload", "event"]), json_values))
def test_no_json_object_raises_anything_but_malformed(fields: dict[str, Any]) -> None:
    try:
        parse_server_message(json.dumps(fields))
    except MalformedMessage:
        pass


def test_subscribe_passes_every_option_through() -> None:
    options = SubscribeOptions(
        filter="status=eq.paid", events=("INSERT",), columns=("id", "status"), subscription="list"
    )
    frame = json.loads(encode_subscribe("table:public.orders", options, since=41, ref="c1"))
    assert frame == {
        "type": "subscribe",
        "channel": "table:public.orders",
        "filter": "status=eq.paid",
        "events": ["INSERT"],
        "columns": ["id", "status"],
        "subscription": "list",
        "since": "41",
        "ref": "c1",
    }
    plain = json.loads(encode_subscribe("table:public.orders", SubscribeOptions(), ref=1))
    assert plain == {"type": "subscribe", "channel": "table:public.orders", "ref": 1}
    room = json.loads(encode_subscribe("broadcast:r", SubscribeOptions(self_broadcasts=True)))
    assert room == {"type": "subscribe", "channel": "broadcast:r", "self": True}


def test_the_other_requests() -> None:
    assert json.loads(encode_unsubscribe("table:a.b", subscription="s", ref="c2")) == {
        "type": "unsubscribe",
        "channel": "table:a.b",
        "subscription": "s",
        "ref": "c2",
    }
    assert json.loads(encode_access_token("t.o.k", ref="c3")) == {
        "type": "access_token",
        "token": "t.o.k",
        "ref": "c3",
    }
    assert json.loads(encode_broadcast("broadcast:r", "cursor", {"x": 1}, ref="c4")) == {
        "type": "broadcast",
        "channel": "broadcast:r",
        "event": "cursor",
        "payload": {"x": 1},
        "ref": "c4",
    }
    assert json.loads(encode_track("broadcast:r", {"name": "Ann"})) == {
        "type": "track",
        "channel": "broadcast:r",
        "state": {"name": "Ann"},
    }
    untrack = {"type": "untrack", "channel": "broadcast:r", "ref": 5}
    assert json.loads(encode_untrack("broadcast:r", ref=5)) == untrack


def test_row_contents_stay_out_of_reprs() -> None:
    change = Change(1, "INSERT", "public", "users", {"email": "ann@example.com"}, None)
    assert "ann@example.com" not in repr(change)


def test_broadcast_channel_frames_from_the_servers_encoders() -> None:
    assert parse_server_message(encode_message("broadcast:r", "cursor", '{"x":1}')) == Broadcast(
        "broadcast:r", "cursor", {"x": 1}
    )
    assert parse_server_message(encode_message("broadcast:r", "e", "[1]", 57)) == Broadcast(
        "broadcast:r", "e", [1], id=57
    )
    state = encode_presence_state("broadcast:r", {"ann": [("p1", '{"tab":1}')]})
    ann = PresenceEntry("p1", {"tab": 1})
    assert parse_server_message(state) == PresenceState("broadcast:r", {"ann": (ann,)})
    diff = encode_presence_diff("broadcast:r", {"bob": [("p2", "{}")]}, {"ann": [("p1", "2")]}, {})
    assert parse_server_message(diff) == PresenceDiff(
        "broadcast:r",
        joins={"bob": (PresenceEntry("p2", {}),)},
        updates={"ann": (PresenceEntry("p1", 2),)},
        leaves={},
    )
