"""Every protocol error over a real socket: a readable error, and the connection stays usable."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql
from websockets.exceptions import ConnectionClosed

from tests.support.client import realtime_client
from tests.support.server import ServerThread


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "JSON object"),
        ('"subscribe"', "JSON object"),
        ('{"type": "publish", "channel": "table:public.x"}', "unknown message type"),
        ('{"channel": "table:public.x"}', "missing message type"),
        ('{"type": "subscribe"}', "missing channel"),
        ('{"type": "subscribe", "channel": 42}', "channel must be a string"),
        ('{"type": "subscribe", "channel": "public.products"}', "table:schema.table"),
        ('{"type": "subscribe", "channel": "table:products"}', "table:schema.table"),
        ('{"type": "subscribe", "channel": "table:.products"}', "table:schema.table"),
        ('{"type": "subscribe", "channel": "table:public."}', "table:schema.table"),
        ('{"type": "subscribe", "channel": "table:public.' + "x" * 64 + '"}', "63 bytes"),
        ('{"type": "subscribe", "channel": "table:public.no_such_table_here"}', "does not exist"),
        ('{"type": "unsubscribe", "channel": "table:public.never_subscribed"}', "not subscribed"),
    ],
)
async def test_bad_requests_get_an_error_and_the_connection_stays_open(
    server: ServerThread, db: psycopg.AsyncConnection, table: str, frame: str, words: str
) -> None:
    async with realtime_client(server.ws_url) as client:
        await client.send_raw(frame)
        error = await client.receive()
        assert error["type"] == "error", error
        assert words in error["error"]
        # Still open and working: a valid subscribe after the error is acked and delivers.
        await client.subscribe(f"table:public.{table}")
        await db.execute(
            sql.SQL("INSERT INTO {} (name) VALUES ('after error')").format(sql.Identifier(table))
        )
        [change] = await client.broadcasts(1)
    assert change["payload"]["record"]["name"] == "after error"


async def test_errors_echo_ref_and_name_the_channel(server: ServerThread) -> None:
    async with realtime_client(server.ws_url) as client:
        await client.send(type="subscribe", channel="table:public.missing_table", ref="r-17")
        assert await client.receive() == {
            "type": "error",
            "error": "table public.missing_table does not exist",
            "channel": "table:public.missing_table",
            "ref": "r-17",
        }
        await client.send(type="bogus", ref=5)
        error = await client.receive()
        assert error["ref"] == 5


async def test_table_without_realtime_is_refused_with_the_fix(
    server: ServerThread, db: psycopg.AsyncConnection
) -> None:
    await db.execute("CREATE TABLE IF NOT EXISTS public.plain_table (id int)")
    async with realtime_client(server.ws_url) as client:
        await client.send(type="subscribe", channel="table:public.plain_table")
        error = await client.receive()
    assert error["type"] == "error"
    assert "enable_realtime" in error["error"]


async def test_binary_frames_are_refused(server: ServerThread) -> None:
    async with realtime_client(server.ws_url) as client:
        await client.send_raw(b'{"type":"subscribe"}')
        error = await client.receive()
        assert error["type"] == "error"
        assert "binary" in error["error"]
        await client.send_raw("{}")
        assert (await client.receive())["type"] == "error"


async def test_oversized_frame_gets_an_error_then_close_1009(server: ServerThread) -> None:
    limit = server.services.settings.realtime_max_message_bytes
    async with realtime_client(server.ws_url, max_size=None) as client:
        await client.send(type="subscribe", channel="table:public.x", ref="p" * limit)
        error = await client.receive()
        assert error["type"] == "error"
        assert f"larger than {limit} bytes" in error["error"]
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


async def test_frame_at_the_limit_is_accepted(server: ServerThread) -> None:
    limit = server.services.settings.realtime_max_message_bytes
    frame = '{"type":"bogus","pad":"' + "é" * 10 + "x" * (limit - 46) + '"}'
    assert len(frame.encode()) <= limit
    async with realtime_client(server.ws_url) as client:
        await client.send_raw(frame)
        error = await client.receive()
    assert "unknown message type" in error["error"]
