"""The client against a server at capacity: refused with HTTP 503 before the upgrade, it stays away for the
Retry-After the server asked for (plus jitter), then retries until there is room and subscribes as usual;
a subscribe refused because too many wait for the database is sent again after its `retry_after` only.

Waiting "long enough" is proved by counting, not by a clock: while the client should be waiting, another
client makes refused attempts one after the other, and the server's refusal counter must grow by exactly
those. The client's own backoff is a millisecond, so a client that ignored the hint would have come back
(and been counted) many times meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from client_test_support import WAIT, make_client
from fluxbase_realtime_client import Backoff, RealtimeClient
from tests.conftest import make_settings
from tests.support.client import realtime_client
from tests.support.metrics import scrape, value
from tests.support.sequencer import SEQUENCER_LOCK, SEQUENCER_UNLOCK, WAITING_FOR_ADVISORY_LOCK
from tests.support.server import ServerThread

P = "fluxbase_realtime_"
# Long against the test's work while the client must wait, short against the client's cap on a hint.
RETRY_AFTER = 30
# Refused attempts by the test's own client while the client under test must stay away.
OTHERS = 10


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Polls a condition the server exposes only by request (its metrics, PostgreSQL's locks)."""
    for _ in range(int(WAIT / 0.01)):
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


def _eager_client(url: str) -> RealtimeClient:
    """A client whose own backoff is next to nothing: only the server's hint keeps it away."""
    return RealtimeClient(
        url, backoff=Backoff(base=0.001, cap=0.001), open_timeout=2.0, connect_options={"proxy": None}
    )


async def test_a_client_refused_at_capacity_retries_until_a_slot_frees_up(
    database_url: str, table: str
) -> None:
    with ServerThread(make_settings(database_url, realtime_max_connections=1)) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            occupant = await connect(server.ws_url, proxy=None)
            async with make_client(server.ws_url) as client:
                stream = client.changes(f"table:public.{table}")
                subscribing = asyncio.create_task(stream.subscribed())

                # It comes back after the first refusal (and its Retry-After): a retry, not a give-up.
                async def refused_twice() -> bool:
                    metrics = await scrape(http)
                    return value(metrics, P + "connections_rejected_total", reason="capacity") >= 2

                await _until(refused_twice, "the client was refused twice")
                assert not subscribing.done()
                assert client.connects == 0
                await occupant.close()
                async with asyncio.timeout(WAIT):
                    await subscribing
                assert client.connects == 1


async def test_a_client_refused_with_retry_after_stays_away_that_long(database_url: str) -> None:
    settings = make_settings(
        database_url, realtime_max_connections=1, realtime_retry_after_seconds=RETRY_AFTER
    )
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:

            async def refused() -> float:
                return value(await scrape(http), P + "connections_rejected_total", reason="capacity")

            occupant = await connect(server.ws_url, proxy=None)
            try:
                async with _eager_client(server.ws_url) as client:

                    async def client_refused() -> bool:
                        return await refused() >= 1

                    await _until(client_refused, "the client's first attempt was refused")
                    for _ in range(OTHERS):
                        with pytest.raises(InvalidStatus) as other:
                            await connect(server.ws_url, proxy=None, open_timeout=WAIT)
                        assert other.value.response.headers["Retry-After"] == str(RETRY_AFTER)
                    # Every refusal since the client's first was one of the test's: it stayed away.
                    assert await refused() == 1 + OTHERS
                    assert client.connects == 0 and client.status == "connecting"
            finally:
                await occupant.close()


async def test_a_subscribe_refused_for_load_is_sent_again_only_after_its_retry_after(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    settings = make_settings(
        database_url, realtime_max_pending_subscribes=1, realtime_retry_after_seconds=RETRY_AFTER
    )
    # Held by the test, the sequencer's lock keeps a subscribe's pass from finishing: it waits, and fills
    # the one place for a waiting subscribe.
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as holder:
        with ServerThread(settings) as server:
            async with (
                httpx.AsyncClient(base_url=server.http_url) as http,
                realtime_client(server.ws_url) as waiting,
                realtime_client(server.ws_url) as other,
            ):

                async def busy() -> float:
                    return value(await scrape(http), P + "subscribes_refused_busy_total")

                await holder.execute(SEQUENCER_LOCK)
                try:
                    await waiting.send(type="subscribe", channel=channel, ref="waits")

                    async def pass_blocked() -> bool:
                        row = await (await db.execute(WAITING_FOR_ADVISORY_LOCK)).fetchone()
                        return bool(row and row[0] >= 1)

                    await _until(pass_blocked, "the subscribe's sequencer pass waits for the lock")
                    async with _eager_client(server.ws_url) as client:
                        stream = client.changes(channel)
                        subscribing = asyncio.create_task(stream.subscribed())

                        async def client_refused() -> bool:
                            return await busy() >= 1

                        await _until(client_refused, "the client's subscribe was refused")
                        for n in range(OTHERS):
                            await other.send(type="subscribe", channel=channel, ref=f"o{n}")
                            refusal = await other.receive()
                            assert refusal["code"] == "subscribe_failed", refusal
                            assert refusal["retry_after"] == RETRY_AFTER
                        # Every refusal since the client's was one of the test's: it has not resubscribed,
                        # and it has not given up either.
                        assert await busy() == 1 + OTHERS
                        assert not subscribing.done()
                        subscribing.cancel()
                finally:
                    await holder.execute(SEQUENCER_UNLOCK)
                assert (await waiting.receive())["type"] == "ack"
