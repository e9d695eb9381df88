"""The WebSocket protocol: parsing client frames and encoding server frames (pure, no I/O)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.protocol import (
    HEARTBEAT,
    AccessTokenRequest,
    BroadcastEncoder,
    ChannelRequest,
    Operation,
    ProtocolError,
    TableChannel,
    encode_ack,
    encode_error,
    encode_reply,
    parse_channel,
    parse_client_message,
    parse_request,
)


def message(**fields: Any) -> str:
    return json.dumps(fields)


def parse_error(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(text)
    return caught.value


# --- valid requests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize("ref", [None, "r-1", "", "x" * 128, 7, 0, -3, 2**63 - 1])
def test_valid_request_is_parsed_and_ref_echoed(kind: str, ref: str | int | None) -> None:
    fields: dict[str, Any] = {"type": kind, "channel": "table:public.products"}
    if ref is not None:
        fields["ref"] = ref
    request = parse_client_message(json.dumps(fields))
    assert request == ChannelRequest(kind, TableChannel("public", "products"), ref)  # type: ignore[arg-type]
    assert type(request.ref) is type(ref)


def test_explicit_null_ref_means_no_ref() -> None:
    assert parse_client_message(message(type="subscribe", channel="table:a.b", ref=None)).ref is None


@pytest.mark.parametrize("ref", [True, False, 1.5, 1.0, 1e30, [1], {"a": 1}, "x" * 129])
def test_bad_ref_is_rejected(ref: object) -> None:
    error = parse_error(message(type="subscribe", channel="table:public.products", ref=ref))
    assert "ref" in str(error)
    assert error.ref is None


# --- malformed messages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "{", "{'type': 'subscribe'}", "nul", '{"type": "subscribe",}', "NaN"])
def test_malformed_json(text: str) -> None:
    assert "malformed JSON" in str(parse_error(text))


@pytest.mark.parametrize("text", ["[]", '["subscribe"]', '"subscribe"', "42", "1.5", "null", "true"])
def test_non_object_json(text: str) -> None:
    assert "JSON object" in str(parse_error(text))


@pytest.mark.parametrize("kind", ["absent", None, 5, ["subscribe"], {"subscribe": 1}])
def test_missing_or_non_string_type(kind: object) -> None:
    fields: dict[str, Any] = {"channel": "table:public.x", "ref": "r"}
    if kind != "absent":
        fields["type"] = kind
    error = parse_error(json.dumps(fields))
    assert "type" in str(error) and "subscribe" in str(error)
    assert error.ref == "r"


@pytest.mark.parametrize("kind", ["publish", "Subscribe", "", "subscribe "])
def test_unknown_type(kind: str) -> None:
    error = parse_error(message(type=kind, channel="table:public.x", ref=11))
    assert "unknown message type" in str(error)
    assert repr(kind) in str(error)
    assert error.ref == 11


def test_missing_channel() -> None:
    for text in (message(type="subscribe", ref="m"), message(type="subscribe", channel=None, ref="m")):
        error = parse_error(text)
        assert "missing channel" in str(error)
        assert error.ref == "m"


@pytest.mark.parametrize("channel", [5, 1.5, True, ["table:public.x"], {"table": "public.x"}])
def test_non_string_channel(channel: object) -> None:
    error = parse_error(message(type="subscribe", channel=channel, ref=2))
    assert "channel must be a string" in str(error)
    assert error.ref == 2


@pytest.mark.parametrize(
    "channel",
    [
        "public.products",  # no prefix
        "Table:public.products",  # prefix is case-sensitive
        "tables:public.products",
        " table:public.products",
        "table:products",  # no dot
        "table:",
        "table:.products",  # empty schema
        "table:public.",  # empty table
        "table:.",
    ],
)
def test_invalid_channel_shape(channel: str) -> None:
    error = parse_error(message(type="unsubscribe", channel=channel, ref="c"))
    assert "invalid channel" in str(error)
    assert "table:schema.table" in str(error)
    assert error.ref == "c"


def test_invalid_channel_message_is_clipped() -> None:
    error = parse_error(message(type="subscribe", channel="x" * 10_000))
    assert len(str(error)) < 200


@pytest.mark.parametrize(
    ("channel", "kind"), [("table:pub\x00lic.x", "schema"), ("table:public.x\x00", "table")]
)
def test_nul_in_names(channel: str, kind: str) -> None:
    error = parse_error(message(type="subscribe", channel=channel, ref=4))
    assert "NUL" in str(error) and kind in str(error)
    assert error.ref == 4


@pytest.mark.parametrize("name", ["a" * 64, "é" * 32, "€" * 21 + "a", "😀" * 16])
@pytest.mark.parametrize("kind", ["schema", "table"])
def test_names_over_63_utf8_bytes_are_rejected(name: str, kind: str) -> None:
    assert len(name.encode()) > 63
    channel = f"table:{name}.t" if kind == "schema" else f"table:s.{name}"
    error = parse_error(message(type="subscribe", channel=channel))
    assert "63" in str(error) and kind in str(error)


@pytest.mark.parametrize("name", ["a" * 63, "é" * 31, "€" * 21, "😀" * 15 + "abc"])
def test_names_of_at_most_63_utf8_bytes_are_accepted(name: str) -> None:
    assert len(name.encode()) <= 63
    assert parse_channel(f"table:{name}.{name}") == TableChannel(name, name)


@pytest.mark.parametrize(
    ("channel", "schema", "table"),
    [
        ("table:public.my.table", "public", "my.table"),
        ("table:public..x", "public", ".x"),
        ("table:public.x.", "public", "x."),
        ("table:My Schema.Order Items", "My Schema", "Order Items"),
        ("table: public . Products ", " public ", " Products "),
        ('table:we"ird.ta\\ble', 'we"ird', "ta\\ble"),
        ("table:über.日本", "über", "日本"),
    ],
)
def test_names_are_preserved_exactly(channel: str, schema: str, table: str) -> None:
    request = parse_client_message(message(type="subscribe", channel=channel))
    assert request.channel == TableChannel(schema, table)
    assert request.channel.name == channel


def test_deeply_nested_json_is_a_protocol_error() -> None:
    depth = 100_000
    with pytest.raises(ProtocolError):
        parse_client_message("[" * depth + "]" * depth)
    with pytest.raises(ProtocolError):
        parse_client_message('{"type":' + '{"a":' * depth + "1" + "}" * depth + "}")


# --- encoders --------------------------------------------------------------------------------------------


def test_heartbeat_frame() -> None:
    assert orjson.loads(HEARTBEAT) == {"type": "heartbeat"}


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (None, {"type": "ack", "channel": "table:public.x"}),
        ("r1", {"type": "ack", "channel": "table:public.x", "ref": "r1"}),
        (0, {"type": "ack", "channel": "table:public.x", "ref": 0}),
        (12, {"type": "ack", "channel": "table:public.x", "ref": 12}),
    ],
)
def test_encode_ack(ref: str | int | None, expected: dict[str, Any]) -> None:
    assert orjson.loads(encode_ack("table:public.x", ref)) == expected


@pytest.mark.parametrize(
    ("kwargs", "extra"),
    [
        ({}, {}),
        ({"ref": "r"}, {"ref": "r"}),
        ({"ref": 0}, {"ref": 0}),
        ({"channel": "table:a.b"}, {"channel": "table:a.b"}),
        ({"code": "forbidden"}, {"code": "forbidden"}),
        (
            {"ref": 3, "channel": "table:a.b", "code": "not_found"},
            {"ref": 3, "channel": "table:a.b", "code": "not_found"},
        ),
    ],
)
def test_encode_error(kwargs: dict[str, Any], extra: dict[str, Any]) -> None:
    text = 'bad "thing"\n\\ é'
    assert orjson.loads(encode_error(text, **kwargs)) == {"type": "error", "error": text, **extra}


PRODUCTS = TableChannel("public", "products")


@pytest.mark.parametrize(
    ("op", "record", "old_record", "payload_extra"),
    [
        ("INSERT", '{"id":1,"name":"a"}', None, {"record": {"id": 1, "name": "a"}}),
        (
            "UPDATE",
            '{"id":1,"name":"b"}',
            '{"id":1,"name":"a"}',
            {"record": {"id": 1, "name": "b"}, "old_record": {"id": 1, "name": "a"}},
        ),
        ("DELETE", None, '{"id":1}', {"old_record": {"id": 1}}),
    ],
)
def test_broadcast_shapes(
    op: Operation, record: str | None, old_record: str | None, payload_extra: dict[str, Any]
) -> None:
    frame = orjson.loads(BroadcastEncoder(PRODUCTS).encode(42, op, record, old_record))
    assert frame == {
        "type": "broadcast",
        "channel": "table:public.products",
        "id": 42,
        "payload": {"type": op, "table": "products", "schema": "public", **payload_extra},
    }


def test_broadcast_large_id_stays_an_integer() -> None:
    frame = orjson.loads(BroadcastEncoder(PRODUCTS).encode(2**63 - 1, "INSERT", "{}", None))
    assert frame["id"] == 2**63 - 1


@pytest.mark.parametrize(
    ("schema", "table"),
    [
        ('sch"ema', 'ta"ble'),
        ("back\\slash", "end\\"),
        ("ünïcødé", "日本語テーブル😀"),
        ("tab\there", "new\nline\r\x01\x1f\x7f"),
        ("\u2028\u2029", "</script>"),
        ("a.b", "c.d"),
    ],
)
def test_broadcast_escapes_names(schema: str, table: str) -> None:
    channel = TableChannel(schema, table)
    frame = orjson.loads(BroadcastEncoder(channel).encode(1, "DELETE", None, '{"k":"v"}'))
    assert frame["channel"] == channel.name
    assert frame["payload"]["schema"] == schema
    assert frame["payload"]["table"] == table
    assert frame["payload"]["old_record"] == {"k": "v"}


def test_encoder_names_escaped_in_ack_and_error() -> None:
    name = 'table:"q".\\b\n\x00é'
    assert orjson.loads(encode_ack(name, "r"))["channel"] == name
    assert orjson.loads(encode_error("e", channel=name))["channel"] == name


# --- properties ------------------------------------------------------------------------------------------

# Surrogates included: a WebSocket text frame is decoded UTF-8, but the parser must not depend on that.
any_text = st.text(st.characters(exclude_categories=()) | st.characters(categories=["Cs"]))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**200)
    | st.floats()
    | any_text,
    lambda children: st.lists(children) | st.dictionaries(any_text, children),
    max_leaves=30,
)

# Objects that look like requests, so the property also reaches the ref/type/channel checks.
request_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["subscribe", "unsubscribe", "other"]) | json_values,
        "channel": st.builds(lambda s, t: f"table:{s}.{t}", any_text, any_text) | json_values,
        "ref": json_values,
    },
)


def parses_or_protocol_error(text: str) -> None:
    try:
        result = parse_client_message(text)
    except ProtocolError as error:
        assert str(error)
    else:
        assert isinstance(result, ChannelRequest)


@given(any_text)
def test_arbitrary_text_parses_or_raises_protocol_error(text: str) -> None:
    parses_or_protocol_error(text)


@given(json_values | request_like)
def test_arbitrary_json_parses_or_raises_protocol_error(value: object) -> None:
    parses_or_protocol_error(json.dumps(value))
    parses_or_protocol_error(json.dumps(value, ensure_ascii=False))


def _fits(name: str) -> bool:
    return len(name.encode()) <= 63


def identifiers(excluded: str) -> st.SearchStrategy[str]:
    alphabet = st.characters(codec="utf-8", exclude_characters=excluded)
    return st.text(alphabet, min_size=1, max_size=63).filter(_fits)


names = identifiers("\x00")
schemas = identifiers("\x00.")  # the schema ends at the first dot


@given(schemas, names)
def test_valid_channel_names_round_trip(schema: str, table: str) -> None:
    channel = TableChannel(schema, table)
    assert parse_channel(channel.name) == channel
    request = parse_client_message(orjson.dumps({"type": "subscribe", "channel": channel.name}).decode())
    assert request.channel == channel


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
records = st.dictionaries(
    st.text(),
    st.recursive(json_scalars, lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=10),
).map(lambda d: orjson.dumps(d).decode())


@given(
    st.text(),
    st.text(),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.sampled_from(["INSERT", "UPDATE", "DELETE"]),
    records,
    records,
)
def test_broadcast_is_always_valid_json(
    schema: str, table: str, change_id: int, op: Operation, record: str, old_record: str
) -> None:
    channel = TableChannel(schema, table)
    frame = orjson.loads(BroadcastEncoder(channel).encode(change_id, op, record, old_record))
    assert frame["type"] == "broadcast"
    assert frame["channel"] == channel.name
    assert frame["id"] == change_id
    payload = frame["payload"]
    assert (payload["type"], payload["schema"], payload["table"]) == (op, schema, table)
    if op == "DELETE":
        assert "record" not in payload
    else:
        assert payload["record"] == orjson.loads(record)
    if op == "INSERT":
        assert "old_record" not in payload
    else:
        assert payload["old_record"] == orjson.loads(old_record)


# --- access_token (the in-band token refresh) -----------------------------------------------------------

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"


def test_access_token_is_parsed() -> None:
    request = parse_request(message(type="access_token", token=TOKEN, ref="r1"))
    assert request == AccessTokenRequest(TOKEN, "r1")
    assert parse_request(message(type="access_token", token=TOKEN)) == AccessTokenRequest(TOKEN)


def test_access_token_never_shows_in_a_repr() -> None:
    assert TOKEN not in repr(AccessTokenRequest(TOKEN, 7))


@pytest.mark.parametrize("token", [None, "", 42, ["a.b.c"], {"token": "x"}])
def test_access_token_needs_a_token_string(token: object) -> None:
    with pytest.raises(ProtocolError, match="token") as caught:
        parse_request(message(type="access_token", token=token, ref=3))
    assert caught.value.ref == 3


def test_access_token_bad_ref_is_refused_without_quoting_the_token() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(message(type="access_token", token=TOKEN, ref="r" * 200))
    assert TOKEN not in str(caught.value)


def test_parse_request_handles_channel_requests_like_parse_client_message() -> None:
    for text in (
        message(type="subscribe", channel="table:public.t", ref=1, since="4"),
        message(type="unsubscribe", channel="table:public.t"),
    ):
        assert parse_request(text) == parse_client_message(text)
    for bad in ("nope", "[]", message(type="publish"), message(channel="table:public.t")):
        with pytest.raises(ProtocolError) as expected:
            parse_client_message(bad)
        with pytest.raises(ProtocolError) as got:
            parse_request(bad)
        assert str(got.value) == str(expected.value)


def test_parse_client_message_still_refuses_access_token() -> None:
    with pytest.raises(ProtocolError, match="unknown message type"):
        parse_client_message(message(type="access_token", token=TOKEN))


def test_encode_reply() -> None:
    assert orjson.loads(encode_reply("r1")) == {"type": "ack", "ref": "r1"}
    assert orjson.loads(encode_reply()) == {"type": "ack"}
