"""The client against a server at capacity: refused with HTTP 503 before the upgrade, it backs off and
retries until there is room, then subscribes as usual."""

from __future__ import annotations

import asyncio

import httpx
from websockets.asyncio.client import connect

from client_test_support import WAIT, make_client
from tests.conftest import make_settings
from tests.support.metrics import scrape, value
from tests.support.server import ServerThread


async def test_a_client_refused_at_capacity_retries_until_a_slot_frees_up(
    database_url: str, table: str
) -> None:
    with ServerThread(make_settings(database_url, realtime_max_connections=1)) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            occupant = await connect(server.ws_url, proxy=None)
            async with make_client(server.ws_url) as client:
                stream = client.changes(f"table:public.{table}")
                subscribing = asyncio.create_task(stream.subscribed())

                # It comes back after the first refusal: a retry, not a give-up.
                for _ in range(int(WAIT / 0.01)):
                    metrics = await scrape(http)
                    if value(metrics, "fluxbase_realtime_connections_rejected_total", reason="capacity") >= 2:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("the client was not refused twice")
                assert not subscribing.done()
                assert client.connects == 0
                await occupant.close()
                async with asyncio.timeout(WAIT):
                    await subscribing
                assert client.connects == 1
