"""Broadcast channels on one instance: client messages, `self`, acks, errors, limits, and messages sent
from the database and over HTTP (delivered on commit, with ids, replayed with `since`)."""

from __future__ import annotations

import httpx
import orjson
import psycopg
import pytest

from tests.conftest import make_settings
from tests.support.channels import join, next_of, room, token
from tests.support.client import realtime_client
from tests.support.modes import BOTH_MODES
from tests.support.server import ServerThread


async def test_subscribe_acks_then_sends_the_presence_state(server: ServerThread) -> None:
    channel = room()
    async with realtime_client(server.ws_url) as client:
        await client.send(type="subscribe", channel=channel, ref="s1")
        ack = await client.receive()
        assert ack == {"type": "ack", "channel": channel, "ref": "s1", "since": ack["since"]}
        assert await client.receive() == {"type": "presence_state", "channel": channel, "presences": {}}


async def test_a_broadcast_reaches_the_others_but_not_the_sender_by_default(server: ServerThread) -> None:
    channel = room()
    async with realtime_client(server.ws_url) as sender, realtime_client(server.ws_url) as other:
        await join(sender, channel)
        await join(other, channel)
        await sender.send(type="broadcast", channel=channel, event="cursor", payload={"x": 1, "é": [True]})
        assert await other.receive() == {
            "type": "broadcast",
            "channel": channel,
            "event": "cursor",
            "payload": {"x": 1, "é": [True]},
        }
        # The sentinel: the sender's next frame is the other's message, not its own.
        await other.send(type="broadcast", channel=channel, event="sentinel", payload=None)
        assert (await sender.receive())["event"] == "sentinel"


async def test_self_true_delivers_the_senders_own_broadcasts(server: ServerThread) -> None:
    channel = room()
    async with realtime_client(server.ws_url) as client:
        await join(client, channel, self=True)
        await client.send(type="broadcast", channel=channel, event="echo", payload="hi")
        assert await client.receive() == {
            "type": "broadcast",
            "channel": channel,
            "event": "echo",
            "payload": "hi",
        }


async def test_ack_only_with_a_ref(server: ServerThread) -> None:
    channel = room()
    async with realtime_client(server.ws_url) as client:
        await join(client, channel)
        await client.send(type="broadcast", channel=channel, event="cheap", payload={})
        await client.send(type="broadcast", channel=channel, event="acked", payload={}, ref=7)
        # Nothing answered the first: the first reply is the second's ack.
        assert await client.receive() == {"type": "ack", "channel": channel, "ref": 7}


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ({"type": "broadcast", "event": "e", "payload": 1}, "not_subscribed", "subscribe to"),
        ({"type": "track", "state": {}}, "not_subscribed", "subscribe to"),
        ({"type": "untrack"}, "not_subscribed", "subscribe to"),
    ],
)
async def test_sending_on_a_channel_not_subscribed_is_refused(
    server: ServerThread, message: dict[str, object], code: str, words: str
) -> None:
    channel = room()
    async with realtime_client(server.ws_url) as client:
        await client.send(**message, channel=channel, ref="r")
        error = await client.receive()
    assert error["type"] == "error" and error["code"] == code and error["ref"] == "r"
    assert words in error["error"] and error["channel"] == channel


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ({"type": "subscribe", "channel": "broadcast:"}, "must not be empty"),
        ({"type": "subscribe", "channel": "broadcast:" + "x" * 201}, "longer than 200 bytes"),
        ({"type": "subscribe", "channel": "broadcast:" + "é" * 101}, "longer than 200 bytes"),
        ({"type": "subscribe", "channel": "broadcast:a\nb"}, "control character"),
        ({"type": "subscribe", "channel": "broadcast:a\u0085b"}, "control character"),
        ({"type": "subscribe", "channel": "broadcast:ok", "self": "yes"}, "self must be true or false"),
        ({"type": "broadcast", "channel": "broadcast:ok", "payload": 1}, "needs 'event'"),
        ({"type": "broadcast", "channel": "broadcast:ok", "event": ""}, "event must not be empty"),
        ({"type": "broadcast", "channel": "broadcast:ok", "event": "e" * 201}, "event is longer"),
        ({"type": "broadcast", "channel": "table:public.x", "event": "e"}, "needs a broadcast channel"),
        ({"type": "track", "channel": "broadcast:ok", "state": [1]}, "a JSON object"),
    ],
)
async def test_malformed_broadcast_messages_are_refused_and_the_connection_stays(
    server: ServerThread, message: dict[str, object], words: str
) -> None:
    async with realtime_client(server.ws_url) as client:
        await client.send_raw(orjson.dumps({**message, "ref": "bad"}).decode())
        error = await client.receive()
        assert error["type"] == "error" and error["ref"] == "bad" and words in error["error"], error
        channel = room()
        await join(client, channel)  # still served


async def test_payload_over_the_limit_is_refused(database_url: str) -> None:
    channel = room()
    settings = make_settings(database_url, realtime_max_broadcast_payload_bytes=100)
    with ServerThread(settings) as server:
        async with realtime_client(server.ws_url) as sender, realtime_client(server.ws_url) as other:
            await join(sender, channel)
            await join(other, channel)
            await sender.send(type="broadcast", channel=channel, event="big", payload="x" * 120, ref=1)
            error = await sender.receive()
            await sender.send(type="broadcast", channel=channel, event="small", payload="x" * 80)
            assert (await other.receive())["event"] == "small"  # the big one never arrived
    assert error["code"] == "payload_too_large" and "100 bytes" in error["error"] and error["ref"] == 1


async def test_unsubscribe_stops_delivery(server: ServerThread) -> None:
    channel, sentinel_channel = room(), room()
    async with realtime_client(server.ws_url) as client, realtime_client(server.ws_url) as sender:
        await join(client, channel)
        await join(client, sentinel_channel)
        await join(sender, channel)
        await join(sender, sentinel_channel)
        await client.send(type="unsubscribe", channel=channel, ref="u")
        assert await client.receive() == {"type": "ack", "channel": channel, "ref": "u"}
        await sender.send(type="broadcast", channel=channel, event="gone", payload={})
        await sender.send(type="broadcast", channel=sentinel_channel, event="sentinel", payload={})
        assert (await client.receive())["event"] == "sentinel"
        await client.send(type="unsubscribe", channel=channel, ref="again")
        error = await client.receive()
    assert error["type"] == "error" and "not subscribed" in error["error"]


@BOTH_MODES  # the log takes SQL broadcasts from the sender's transaction in either capture mode
class TestFromTheDatabase:
    async def test_delivered_on_commit_with_an_id_never_on_rollback(
        self, server: ServerThread, db: psycopg.AsyncConnection
    ) -> None:
        channel = room()
        async with realtime_client(server.ws_url) as client:
            await join(client, channel)
            async with db.transaction(force_rollback=True):
                await db.execute("SELECT realtime_broadcast(%s, 'lost', '{}')", (channel,))
            async with db.transaction():
                await db.execute(
                    "SELECT realtime_broadcast(%s, 'kept', %s::jsonb)",
                    (channel.removeprefix("broadcast:"), orjson.dumps({"n": 1}).decode()),
                )
                await db.execute("SELECT realtime_broadcast(%s, 'kept2', 'null')", (channel,))
            first, second = await client.broadcasts(2)
        assert first["event"] == "kept" and first["payload"] == {"n": 1} and first["channel"] == channel
        assert second["event"] == "kept2" and second["payload"] is None
        assert second["id"] == first["id"] + 1  # consecutive within the transaction

    async def test_since_replays_them(self, server: ServerThread, db: psycopg.AsyncConnection) -> None:
        channel = room()
        async with realtime_client(server.ws_url) as client:
            await join(client, channel)
            for n in range(5):
                await db.execute("SELECT realtime_broadcast(%s, 'n', %s::jsonb)", (channel, str(n)))
            sent = await client.broadcasts(5)
        async with realtime_client(server.ws_url) as resumed:
            await join(resumed, channel, since=str(sent[1]["id"]))
            replayed = await resumed.broadcasts(3)
            await db.execute("SELECT realtime_broadcast(%s, 'live', '5')", (channel,))
            [live] = await resumed.broadcasts(1)
        assert replayed == sent[2:]
        assert live["payload"] == 5 and live["id"] > sent[-1]["id"]

    async def test_any_size_works(self, server: ServerThread, db: psycopg.AsyncConnection) -> None:
        channel = room()
        big = {"blob": "x" * 1_000_000}
        async with realtime_client(server.ws_url, max_size=None) as client:
            await join(client, channel)
            await db.execute(
                "SELECT realtime_broadcast(%s, 'big', %s::jsonb)", (channel, orjson.dumps(big).decode())
            )
            [message] = await client.broadcasts(1)
        assert message["payload"] == big

    @pytest.mark.parametrize("name", ["", "x" * 201, "a\x01b"])
    async def test_bad_names_raise(self, db: psycopg.AsyncConnection, name: str) -> None:
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            await db.execute("SELECT realtime_broadcast(%s, 'e', '{}')", (name,))
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            await db.execute("SELECT realtime_broadcast('ok', %s, '{}')", (name,))


class TestOverHttp:
    async def test_a_service_role_token_sends_one_or_many(self, server: ServerThread) -> None:
        channel = room()
        headers = {"Authorization": f"Bearer {token('backend', role='service_role')}"}
        async with (
            realtime_client(server.ws_url) as client,
            httpx.AsyncClient(base_url=server.http_url) as http,
        ):
            await join(client, channel)
            one = await http.post(
                "/api/realtime/broadcast",
                headers=headers,
                json={"channel": channel, "event": "a", "payload": 1},
            )
            many = await http.post(
                "/api/realtime/broadcast",
                headers=headers,
                json=[{"channel": channel, "event": "b"}, {"channel": channel, "event": "c", "payload": [3]}],
            )
            messages = await client.broadcasts(3)
        assert (one.status_code, one.json()) == (202, {"accepted": 1})
        assert (many.status_code, many.json()) == (202, {"accepted": 2})
        assert [(m["event"], m["payload"]) for m in messages] == [("a", 1), ("b", None), ("c", [3])]
        assert all(isinstance(m["id"], int) for m in messages)

    @pytest.mark.parametrize(
        ("headers", "body", "status", "code"),
        [
            ({}, {"channel": "broadcast:x", "event": "e"}, 401, "unauthorized"),
            ({"Authorization": "Basic abc"}, {"channel": "broadcast:x", "event": "e"}, 401, "unauthorized"),
            (
                {"Authorization": "Bearer not-a-jwt"},
                {"channel": "broadcast:x", "event": "e"},
                401,
                "unauthorized",
            ),
            ("user", {"channel": "broadcast:x", "event": "e"}, 403, "forbidden"),
            ("service", b"{nope", 400, "invalid_request"),
            ("service", [], 400, "invalid_request"),
            ("service", {"channel": "table:public.t", "event": "e"}, 400, "invalid_request"),
            ("service", {"channel": "broadcast:x"}, 400, "invalid_request"),
            ("service", [{"channel": "broadcast:x", "event": "e"}, 5], 400, "invalid_request"),
            (
                "service",
                {"channel": "broadcast:x", "event": "e", "payload": "x" * 2_000_000},
                413,
                "payload_too_large",
            ),
        ],
    )
    async def test_errors_are_json(
        self, server: ServerThread, headers: object, body: object, status: int, code: str
    ) -> None:
        if headers == "user":
            headers = {"Authorization": f"Bearer {token('someone')}"}
        elif headers == "service":
            headers = {"Authorization": f"Bearer {token('backend', role='service_role')}"}
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            response = await http.post(
                "/api/realtime/broadcast",
                headers={**headers, "Content-Type": "application/json"},
                content=content,
            )
        assert response.status_code == status
        assert response.json()["code"] == code and response.json()["error"]

    async def test_nothing_is_sent_when_one_message_is_bad(self, server: ServerThread) -> None:
        channel = room()
        headers = {"Authorization": f"Bearer {token('backend', role='service_role')}"}
        async with (
            realtime_client(server.ws_url) as client,
            httpx.AsyncClient(base_url=server.http_url) as http,
        ):
            await join(client, channel)
            bad = await http.post(
                "/api/realtime/broadcast",
                headers=headers,
                json=[{"channel": channel, "event": "no"}, {"event": 1}],
            )
            await http.post(
                "/api/realtime/broadcast", headers=headers, json={"channel": channel, "event": "yes"}
            )
            [message] = await client.broadcasts(1)
        assert bad.status_code == 400 and "message 1" in bad.json()["error"]
        assert message["event"] == "yes"


async def test_broadcast_channels_count_against_the_channel_limit(database_url: str) -> None:
    settings = make_settings(database_url, realtime_max_channels_per_connection=1)
    with ServerThread(settings) as server:
        async with realtime_client(server.ws_url) as client:
            await join(client, room())
            await client.send(type="subscribe", channel=room(), ref="second")
            error = await next_of(client, "error")
    assert error["code"] == "too_many_channels"


async def test_broadcasts_count_against_the_message_rate(database_url: str) -> None:
    channel = room()
    # One message, refilled every 100 s: the subscribe takes it, so the broadcast is over the rate.
    with ServerThread(make_settings(database_url, realtime_max_messages_per_second=0.01)) as server:
        async with realtime_client(server.ws_url) as client, realtime_client(server.ws_url) as other:
            await join(client, channel)
            await join(other, channel)
            await client.send(type="broadcast", channel=channel, event="dropped", payload=0, ref=1)
            refusal = await client.receive()
    assert refusal["code"] == "rate_limited" and "ref" not in refusal


@BOTH_MODES
async def test_the_ack_position_resumes_database_messages_sent_before_the_first_arrived(
    server: ServerThread, db: psycopg.AsyncConnection
) -> None:
    channel = room()
    async with realtime_client(server.ws_url) as client:
        await client.send_raw(orjson.dumps({"type": "subscribe", "channel": channel}).decode())
        ack = await client.receive()
    await db.execute("SELECT realtime_broadcast(%s, 'while away', '{}')", (channel,))
    async with realtime_client(server.ws_url) as client:
        await join(client, channel, since=ack["since"])
        [missed] = await client.broadcasts(1)
    assert missed["event"] == "while away"
