"""Inbound fuzzing over real WebSockets: whatever a client sends, the server answers and survives.

Hypothesis draws bursts of frames (random text and bytes, deep nesting, huge numbers, wrong types, long
multi-byte channel names, oversized frames, valid subscribes and unsubscribes to real and missing tables)
and sends each burst back to back on one connection of one real server. Properties, per burst:

- every text frame gets exactly one reply, in order: an `ack` or an `error` with a short, readable `error`
  string; a frame with a valid `ref` has it echoed; binary frames get an `error` too;
- a frame over REALTIME_MAX_MESSAGE_BYTES gets an `error` and then close 1009 (over the WebSocket layer's
  own limit: close 1009 without the `error`; invalid UTF-8 in a text frame: close 1007, per RFC 6455);
- otherwise the connection stays open and usable, proved with a sentinel: a subscribe is acked and a row
  inserted afterwards is the next (and only) frame to arrive;
- the server never crashes: it answers /healthz after every burst, and once the run is over its stats read
  0 connections and 0 channels.

The Hypothesis run is driven from a synchronous test, one event loop (an `asyncio.Runner`) for all examples;
the server runs in its own thread. pytest-asyncio (1.5) also runs `@given` on an `async def` test, but the
check that must come after the whole run (the stats) would then need a second, order-dependent test.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from websockets.exceptions import ConnectionClosed

from tests.conftest import make_settings
from tests.support.client import RECEIVE_TIMEOUT, RealtimeClient, realtime_client
from tests.support.server import ServerThread

LIMIT = 64 * 1024  # REALTIME_MAX_MESSAGE_BYTES of the fuzzed server (the default)
WS_LIMIT = max(4 * LIMIT, 1 << 20)  # what app.server gives uvicorn: frames over it are cut without an error
MAX_REF_LENGTH = 128
# A readable error is a sentence, not an echo of the frame: bounded well above the longest message the
# server writes (a few sentences plus a channel name of at most 2 x 63 bytes).
MAX_ERROR_LENGTH = 1024
EXAMPLES = 600
SUFFIX = uuid.uuid4().hex[:8]
# The tables of the fuzzed database, created once (names are exact: no case folding).
LIVE = (f"fuzz_live_a_{SUFFIX}", f"fuzz_live_b_{SUFFIX}")  # realtime enabled; LIVE[0] carries sentinels
PLAIN = f"fuzz_plain_{SUFFIX}"  # realtime not enabled
PROTECTED = f"fuzz_rls_{SUFFIX}"  # realtime enabled, row-level security on, no policy
MISSING = (f"fuzz_missing_{SUFFIX}", "pg_catalog.nope")

Expect = Literal["ack", "error", "either", "too_big", "cut", "invalid_utf8"]
TERMINAL: frozenset[Expect] = frozenset({"too_big", "cut", "invalid_utf8"})
WS_LAYER: frozenset[Expect] = frozenset({"cut", "invalid_utf8"})  # closed by uvicorn, not the app


class _NoCheck:
    def __repr__(self) -> str:
        return "NO_CHECK"


NO_CHECK: Any = _NoCheck()  # the frame's ref is not predictable: do not check the reply's


class Frame:
    """One frame to send and what must come back. A plain class, not a dataclass: Hypothesis prints
    dataclasses field by field, and a falsifying example may hold a 1 MiB frame."""

    def __init__(
        self,
        label: str,
        data: str | bytes,
        expect: Expect,
        *,
        ref: Any = NO_CHECK,
        request: tuple[str, str] | None = None,
        words: str | None = None,
        integer_ref: int | None = None,
    ) -> None:
        self.label = label
        self.data = data
        self.expect = expect
        # The ref the reply must echo; None: the reply must carry no ref; NO_CHECK: unknown.
        self.ref = ref
        # (type, channel) of a well-formed subscribe or unsubscribe, whose answer depends on the tables
        # and on what this connection is subscribed to.
        self.request = request
        self.words = words  # expected in the error
        # For a number in the ref position: the integer the frame carries, if it is one.
        self.integer_ref = integer_ref

    def __repr__(self) -> str:  # Hypothesis prints falsifying examples: keep 1 MiB frames short
        shown = repr(self.data[:160])
        if len(self.data) > 160:
            shown += f"... ({len(self.data)} in all)"
        return f"Frame({self.label!r}, {shown}, expect={self.expect})"


def channel(name: str) -> str:
    return f"table:{name}" if "." in name else f"table:public.{name}"


def text_frame(label: str, data: str, expect: Expect, **extra: Any) -> Frame:
    """A text frame; its size decides whether it is answered or closes the connection."""
    size = len(data.encode())
    if size > WS_LIMIT:
        return Frame(label, data, "cut")
    if size > LIMIT:
        return Frame(label, data, "too_big", words=f"larger than {LIMIT} bytes")
    return Frame(label, data, expect, **extra)


def dump(message: object, ascii_only: bool) -> str:
    return json.dumps(message, ensure_ascii=ascii_only)


# --- strategies -------------------------------------------------------------------------------------

refs = st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1), st.text(max_size=MAX_REF_LENGTH))
bad_refs = st.one_of(
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.text(min_size=MAX_REF_LENGTH + 1, max_size=MAX_REF_LENGTH + 40),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    # Bounded: an integer literal beyond a double's range is refused as a whole (see huge_numbers).
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Keys the protocol reads (or is growing to read): extras must not change a valid request's answer.
RESERVED = {"type", "channel", "ref", "since", "token", "access_token", "event", "filter"}
extras = st.dictionaries(st.text(max_size=8).filter(lambda k: k not in RESERVED), json_values, max_size=3)
LIVE_CHANNELS = frozenset(channel(t) for t in LIVE)
all_channels = [channel(t) for t in (*LIVE, PLAIN, PROTECTED, *MISSING)]


@st.composite
def valid_requests(draw: st.DrawFn) -> Frame:
    kind = draw(st.sampled_from(["subscribe", "unsubscribe"]))
    name = draw(st.sampled_from(all_channels))
    message: dict[str, Any] = {"type": kind, "channel": name, **draw(extras)}
    ref = draw(st.one_of(st.none(), refs))
    if ref is not None:
        message["ref"] = ref
    data = dump(message, draw(st.booleans()))
    return text_frame(f"{kind} {name}", data, "either", ref=ref, request=(kind, name))


@st.composite
def wrong_types(draw: st.DrawFn) -> Frame:
    """A message with one field of the wrong type (or value); the others valid or missing."""
    slot = draw(st.sampled_from(["type", "channel", "ref"]))
    message: dict[str, Any] = {}
    if slot == "type":
        message["type"] = draw(json_values.filter(lambda v: v not in ("subscribe", "unsubscribe")))
    elif draw(st.booleans()):
        message["type"] = draw(st.sampled_from(["subscribe", "unsubscribe"]))
    if slot == "channel":
        message["channel"] = draw(
            st.one_of(
                json_values.filter(lambda v: not isinstance(v, str)),
                st.text(max_size=20),
                st.sampled_from(["", "table:", "table:.", "table:public.", "table:.x", "public.x", "x"]),
            )
        )
    elif draw(st.booleans()):
        message["channel"] = channel(LIVE[1])
    ref: Any = None
    if slot == "ref":
        message["ref"] = draw(bad_refs)
    elif draw(st.booleans()):
        ref = message["ref"] = draw(refs)
    # Whatever the other fields, no table of this database is named: an error.
    return text_frame(f"wrong {slot}", dump(message, draw(st.booleans())), "error", ref=ref)


HUGE_NUMBERS = [
    "1e400",
    "-1e400",
    "1e-400",
    "1E+308",
    "2.5e308",
    "0.1e99999",
    "-0",
    "0e0",
    str(10**100),
    "-" + str(10**100),
    "1" + "0" * 4000,
    str(2**63 - 1),
    str(2**63),
    str(2**64 - 1),
    str(2**64),
    str(-(2**63)),
    str(-(2**63) - 1),
]
numbers = st.one_of(
    st.sampled_from(HUGE_NUMBERS),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)


@st.composite
def huge_numbers(draw: st.DrawFn) -> Frame:
    literal = draw(numbers)
    where = draw(st.sampled_from(["frame", "type", "channel", "ref", "extra"]))
    live = json.dumps(channel(LIVE[1]))
    if where == "frame":
        return text_frame("number frame", literal, "error", ref=None)
    if where == "type":
        return text_frame("number type", f'{{"type":{literal},"channel":{live}}}', "error", ref=None)
    if where == "channel":
        return text_frame("number channel", f'{{"type":"subscribe","channel":{literal}}}', "error", ref=None)
    if where == "extra":
        data = f'{{"type":"subscribe","channel":{live},"n":{literal}}}'
        # Valid JSON; a number the parser cannot represent may still be refused.
        return text_frame("number extra", data, "either", ref=None, request=("subscribe", channel(LIVE[1])))
    integer = int(literal) if re.fullmatch(r"-?[0-9]+", literal) else None
    data = f'{{"type":"subscribe","channel":{live},"ref":{literal}}}'
    return text_frame("number ref", data, "either", integer_ref=integer)


@st.composite
def deep_nesting(draw: st.DrawFn) -> Frame:
    depth = draw(st.one_of(st.integers(1, 2000), st.integers(2000, 10_000)))
    shape = draw(st.sampled_from(["open", "balanced", "objects", "in ref"]))
    if shape == "open":
        data = "[" * depth
    elif shape == "balanced":
        data = "[" * depth + "]" * depth
    elif shape == "objects":
        data = '{"a":' * depth + "1" + "}" * depth
    else:
        nested = "[" * depth + "]" * depth
        data = f'{{"type":"subscribe","channel":{json.dumps(channel(LIVE[1]))},"ref":{nested}}}'
    return text_frame(f"nesting {shape} {depth}", data, "error", ref=None)


MULTI_BYTE = ["é", "ß", "中", "😀", "\u0301", "\u200b", "\U0010ffff", "ǅ"]


@st.composite
def long_channels(draw: st.DrawFn) -> Frame:
    """Names over PostgreSQL's 63 bytes (thousands of characters, multi-byte), and short exotic ones."""
    piece = draw(st.one_of(st.sampled_from(MULTI_BYTE), st.text(min_size=1, max_size=4)))
    count = draw(st.integers(1, 5000))
    long_name = piece * count
    short = draw(st.text(min_size=1, max_size=10))
    name = draw(
        st.sampled_from(
            [
                f"table:{long_name}.{short}",
                f"table:public.{long_name}",
                f"table:{short}.{long_name}",
                f"{long_name}",
                f"table:{long_name}",
            ]
        )
    )
    # Every such channel names no table of this database: an error (too long, malformed, or missing).
    message = {"type": draw(st.sampled_from(["subscribe", "unsubscribe"])), "channel": name}
    ref = draw(st.one_of(st.none(), refs))
    if ref is not None:
        message["ref"] = ref
    return text_frame(f"channel of {len(name)} chars", dump(message, draw(st.booleans())), "error", ref=ref)


@st.composite
def at_the_limit(draw: st.DrawFn) -> Frame:
    """Exactly `size` bytes, up to REALTIME_MAX_MESSAGE_BYTES: answered like any other frame."""
    size = draw(st.sampled_from([LIMIT - 1, LIMIT]))
    head, tail = '{"type":"bogus","pad":"', '"}'
    data = head + "x" * (size - len(head) - len(tail)) + tail
    return text_frame(f"{size} bytes", data, "error", ref=None, words="unknown message type")


@st.composite
def oversized(draw: st.DrawFn) -> Frame:
    shape = draw(st.sampled_from(["ascii", "two-byte", "four-byte", "limit + 1", "ws-limit"]))
    if shape == "ascii":
        return text_frame("ascii over the limit", "x" * draw(st.integers(LIMIT + 1, 2 * LIMIT)), "error")
    if shape == "two-byte":  # fewer characters than the limit, more bytes
        return text_frame("é over the limit", "é" * draw(st.integers(LIMIT // 2 + 1, LIMIT)), "error")
    if shape == "four-byte":
        return text_frame("😀 over the limit", "😀" * draw(st.integers(LIMIT // 4 + 1, LIMIT // 2)), "error")
    if shape == "limit + 1":
        return text_frame("limit + 1", "z" * (LIMIT + 1), "error")
    # The WebSocket layer's own limit: at it, the application refuses; one byte over, uvicorn cuts.
    size = draw(st.sampled_from([WS_LIMIT, WS_LIMIT + 1]))
    return text_frame(f"{size} bytes", "y" * size, "error")


random_text = st.text(max_size=300).map(lambda t: text_frame("random text", t, "either"))
random_json = st.tuples(json_values, st.booleans()).map(
    lambda v: text_frame("random JSON", dump(v[0], v[1]), "either")
)
binary = st.one_of(
    st.binary(max_size=300),
    st.just(b'{"type":"subscribe","channel":"' + channel(LIVE[0]).encode() + b'"}'),
).map(lambda b: Frame("binary", b, "error", ref=None, words="binary"))
invalid_utf8 = st.sampled_from([b"\xff", b'{"type":"\xc3"}', b"\xed\xa0\x80", b"ok\x80"]).map(
    lambda b: Frame("invalid UTF-8 text", b, "invalid_utf8")
)

ordinary = st.one_of(
    valid_requests(),
    valid_requests(),  # twice as likely: the answers depend on the connection's subscriptions
    random_text,
    random_json,
    binary,
    wrong_types(),
    huge_numbers(),
    deep_nesting(),
    long_channels(),
    at_the_limit(),
)
terminal = st.one_of(oversized(), invalid_utf8)


@st.composite
def bursts(draw: st.DrawFn) -> list[Frame]:
    """Up to ~30 frames sent back to back; a quarter of the bursts have one frame that ends the connection."""
    burst = draw(st.lists(ordinary, min_size=1, max_size=30))
    if draw(st.integers(0, 3)) == 3:
        burst.insert(draw(st.integers(0, len(burst))), draw(terminal))
    return burst


# --- checks -----------------------------------------------------------------------------------------


def _check_error_text(reply: dict[str, Any]) -> None:
    text = reply.get("error")
    assert isinstance(text, str), reply
    assert text.strip(), reply
    assert len(text) <= MAX_ERROR_LENGTH, reply
    assert text[0].isalpha() and text[0].isascii(), reply  # a sentence, not a dump


def _check_reply(frame: Frame, reply: dict[str, Any], subscribed: set[str]) -> None:
    """One reply against its frame; `subscribed` follows the connection's acked subscriptions."""
    assert reply.get("type") in ("ack", "error"), (frame, reply)
    if reply["type"] == "error":
        _check_error_text(reply)
    expect = frame.expect
    if frame.request is not None:
        kind, name = frame.request
        ok = name in LIVE_CHANNELS if kind == "subscribe" else name in subscribed
        if frame.label == "number extra" and reply["type"] == "error":
            # Valid JSON, but a number the parser cannot represent may be refused as a whole.
            assert "JSON" in reply["error"], (frame, reply)
        else:
            # Row-level security is a matter of roles and policies (not this test's): either answer.
            if not (kind == "subscribe" and name == channel(PROTECTED)):
                expect = "ack" if ok else "error"
            if reply["type"] == "error":
                assert reply.get("channel") == name, (frame, reply)
    if expect in ("ack", "error"):
        assert reply["type"] == expect, (frame, reply)
    if frame.words is not None:
        assert frame.words in reply.get("error", ""), (frame, reply)
    if frame.ref is not NO_CHECK:
        if frame.ref is None:
            assert "ref" not in reply, (frame, reply)
        else:
            assert reply.get("ref") == frame.ref, (frame, reply)
            assert type(reply["ref"]) is type(frame.ref), (frame, reply)
    if frame.label == "number ref" and "ref" in reply:
        # A ref is echoed exactly, or not at all: never as a rounded float.
        assert frame.integer_ref is not None and reply["ref"] == frame.integer_ref, (frame, reply)
        assert isinstance(reply["ref"], int), (frame, reply)
    if reply["type"] == "ack":
        # The ack names the channel of the request (which, for random frames, is read back from it).
        request = orjson.loads(frame.data)
        assert reply.get("channel") == request["channel"], (frame, reply)
        if request["type"] == "subscribe":
            subscribed.add(request["channel"])
        else:
            subscribed.discard(request["channel"])


async def _expect_close(client: RealtimeClient, code: int) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        await client.receive()
    assert closed.value.rcvd is not None, "the client closed, not the server"
    assert closed.value.rcvd.code == code, closed.value


async def _send_all(client: RealtimeClient, burst: list[Frame]) -> None:
    """Back to back. Sending fails once the server has closed (at a terminal frame): that is expected."""
    for index, frame in enumerate(burst):
        try:
            if frame.expect == "invalid_utf8":
                await client.connection.send(frame.data, text=True)
            else:
                await client.send_raw(frame.data)
        except ConnectionClosed:
            # The frame being sent counts: the server may refuse an oversized frame from its header and
            # close while the rest of it is still being written.
            assert any(f.expect in TERMINAL for f in burst[: index + 1]), (
                f"the server closed the connection at frame {index}, after no frame that closes it"
            )
            return


async def _prove_usable(client: RealtimeClient, db: psycopg.AsyncConnection) -> None:
    """The connection still works: a subscribe is acked, then a fresh row is the next frame, and the only."""
    live = channel(LIVE[0])
    ref = f"sentinel-{uuid.uuid4().hex}"
    await client.send(type="subscribe", channel=live, ref=ref)
    ack = await client.receive()
    assert {k: v for k, v in ack.items() if k != "since"} == {"type": "ack", "channel": live, "ref": ref}
    await db.execute(
        sql.SQL("INSERT INTO public.{} (name) VALUES (%s)").format(sql.Identifier(LIVE[0])), (ref,)
    )
    try:
        received = await client.until_broadcast(lambda m: m["payload"]["record"]["name"] == ref)
    except TimeoutError:
        raise AssertionError(
            f"subscribe to {live} acked, then a row committed after the ack never arrived (waited "
            f"{RECEIVE_TIMEOUT} s): the subscription missed a change committed after its ack"
        ) from None
    assert len(received) == 1, received
    assert received[0]["channel"] == live


async def _run_burst(server: ServerThread, db: psycopg.AsyncConnection, burst: list[Frame]) -> None:
    # Frames the WebSocket layer refuses close the connection at once, maybe before earlier frames were
    # answered: those replies are awaited first, and nothing is sent after such a frame.
    cut = next((i for i, f in enumerate(burst) if f.expect in WS_LAYER), None)
    if cut is not None:
        burst = burst[: cut + 1]
    first_terminal = next((i for i, f in enumerate(burst) if f.expect in TERMINAL), None)
    subscribed: set[str] = set()
    async with realtime_client(server.ws_url, max_size=None) as client:
        head = burst if cut is None else burst[:cut]
        await _send_all(client, head)
        answered = head if first_terminal is None else head[: first_terminal + 1]
        for frame in answered:
            if frame.expect == "too_big":
                error = await client.receive()
                assert error["type"] == "error", (frame, error)
                _check_error_text(error)
                assert f"larger than {LIMIT} bytes" in error["error"], (frame, error)
                await _expect_close(client, 1009)
                break
            _check_reply(frame, await client.receive(), subscribed)
        else:
            if cut is not None:
                await _send_all(client, [burst[cut]])
                await _expect_close(client, 1009 if burst[cut].expect == "cut" else 1007)
            else:
                await _prove_usable(client, db)
                return
    # The connection was closed as documented: the server itself still serves new ones.
    async with realtime_client(server.ws_url) as fresh:
        await _prove_usable(fresh, db)


# --- the test ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_tables(database_url: str) -> Iterator[None]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in (*LIVE, PLAIN, PROTECTED):
            conn.execute(
                sql.SQL("CREATE TABLE public.{} (id serial PRIMARY KEY, name text)").format(
                    sql.Identifier(name)
                )
            )
        for name in (*LIVE, PROTECTED):
            conn.execute("SELECT enable_realtime('public', %s)", (name,))
        conn.execute(
            sql.SQL("ALTER TABLE public.{} ENABLE ROW LEVEL SECURITY").format(sql.Identifier(PROTECTED))
        )
        yield


@pytest.fixture(scope="module")
def fuzz_server(database_url: str, fuzz_tables: None) -> Iterator[ServerThread]:
    """A server of its own, so that its stats count this test's connections only."""
    with ServerThread(make_settings(database_url, realtime_max_message_bytes=LIMIT)) as running:
        yield running


@pytest.mark.timeout(180)
def test_whatever_a_client_sends_it_gets_one_answer_and_the_server_survives(
    fuzz_server: ServerThread, database_url: str
) -> None:
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        db = runner.run(psycopg.AsyncConnection.connect(database_url, autocommit=True))
        http = httpx.AsyncClient(base_url=fuzz_server.http_url)
        try:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=[
                    HealthCheck.function_scoped_fixture,
                    HealthCheck.too_slow,
                    HealthCheck.data_too_large,
                    HealthCheck.large_base_example,
                ],
            )
            @given(burst=bursts())
            def fuzz(burst: list[Frame]) -> None:
                async def example() -> None:
                    async with asyncio.timeout(60):  # a bound against hanging, not a measurement
                        await _run_burst(fuzz_server, db, burst)
                        assert (await http.get("/healthz")).status_code == 200

                runner.run(example())

            fuzz()
            runner.run(_settled_stats(http))
        finally:
            runner.run(http.aclose())
            runner.run(db.close())


async def _settled_stats(http: httpx.AsyncClient) -> None:
    """Closing is asynchronous on the server side: poll (bounded) until every connection is gone."""
    current: dict[str, int] = {}
    for _ in range(1000):
        response = await http.get("/api/realtime/stats")
        assert response.status_code == 200
        current = response.json()
        if (current["connections"], current["channels"]) == (0, 0):
            break
        await asyncio.sleep(0.01)
    assert (current["connections"], current["channels"]) == (0, 0), current
