"""Writers skip NOTIFY while a feed polls, and still no change is left unread (sql/capture.sql).

Two instances, each with a subscriber, one of which never polls. Sustained writes make the other's feed
poll; a change committed then is found without a NOTIFY (the passes wake the second instance), and one
that was written under the lease but commits only after every feed has gone idle is found by the idle
poll, on both instances. Neither writer sends a NOTIFY (proved with a
sentinel notification), so nothing but the design delivers them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from app import migrations
from tests.conftest import make_settings
from tests.support.client import realtime_client
from tests.support.databases import scratch_database
from tests.support.lease import LEASE_VALID
from tests.support.server import ServerThread

FEED_PIDS = (
    "SELECT pid FROM pg_stat_activity"
    " WHERE application_name = 'fluxbase-realtime-feed' AND datname = current_database()"
)
DEADLINE = 60.0  # a bound against hanging, never a measurement of speed


async def _until(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _is_late(message: dict[str, Any]) -> bool:
    return bool(message["payload"]["record"]["name"] == "late")


async def _pid(conn: psycopg.AsyncConnection) -> int:
    row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
    assert row is not None
    return int(row[0])


async def test_changes_that_skipped_notify_reach_every_instance_even_once_the_feeds_are_idle(
    server_url: str,
) -> None:
    with scratch_database(server_url) as url:  # the lease is per database: keep it from other tests
        migrations.upgrade(url)
        # A generous grace: on a loaded machine a feed's pass may come late, and the lease must outlast it.
        settings = make_settings(url, realtime_poll_grace=1.0, realtime_idle_poll_interval=1.0)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
            await db.execute("CREATE TABLE public.polled (id serial PRIMARY KEY, name text)")
            await db.execute("SELECT enable_realtime('public', 'polled')")
            insert = sql.SQL("INSERT INTO public.polled (name) VALUES (%s)")
            # The second instance never polls: while writers skip NOTIFY, only the passes' wake-ups (and
            # its idle poll) tell it anything.
            never_polls = make_settings(url, realtime_busy_pass_interval=0, realtime_idle_poll_interval=1.0)
            with ServerThread(settings) as one, ServerThread(never_polls) as two:
                feeds = (one.services.feed, two.services.feed)
                async with (
                    realtime_client(one.ws_url) as first,
                    realtime_client(two.ws_url) as second,
                    await psycopg.AsyncConnection.connect(url, autocommit=True) as listener,
                    await psycopg.AsyncConnection.connect(url) as polled_writer,
                    await psycopg.AsyncConnection.connect(url) as late_writer,
                ):
                    await listener.execute("LISTEN fluxbase_changes")
                    # The sentinel on a channel of its own: on the service's, it would wake the feeds.
                    await listener.execute("LISTEN notify_skipping_sentinel")
                    for client in (first, second):
                        await client.subscribe("table:public.polled")
                    # Read as they come (a client that stops reading would be closed as too slow).
                    readers = [asyncio.create_task(c.until_broadcast(_is_late)) for c in (first, second)]
                    stop = asyncio.Event()

                    async def load(n: int) -> int:
                        written = 0
                        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                            while not stop.is_set():
                                await conn.execute(insert, (f"load {n}.{written}",))
                                written += 1
                        return written

                    loads = [asyncio.create_task(load(n)) for n in range(3)]

                    async def polling() -> bool:
                        lease = await (await db.execute(LEASE_VALID)).fetchone()
                        return any(f.polling for f in feeds) and bool(lease and lease[0])

                    await _until(polling, "a feed to poll under sustained writes")
                    # Written under the lease: the trigger skips NOTIFY (checked in the same transaction).
                    await late_writer.execute(insert, ("late",))
                    assert await (await late_writer.execute(LEASE_VALID)).fetchone() == (True,)
                    await polled_writer.execute(insert, ("while polling",))
                    assert await (await polled_writer.execute(LEASE_VALID)).fetchone() == (True,)
                    await polled_writer.commit()
                    stop.set()
                    loaded = sum(await asyncio.gather(*loads))

                    async def idle() -> bool:
                        lease = await (await db.execute(LEASE_VALID)).fetchone()
                        return not any(f.polling for f in feeds) and lease == (False,)

                    await _until(idle, "every feed to stop polling and the lease to lapse")
                    # The race the bound is for: nobody polls, and this commit notifies nobody.
                    await late_writer.commit()
                    silent = {await _pid(polled_writer), await _pid(late_writer)}
                    await db.execute("NOTIFY notify_skipping_sentinel")
                    senders = []
                    async for notify in listener.notifies(timeout=DEADLINE):
                        if notify.channel == "notify_skipping_sentinel":
                            break
                        senders.append(notify.pid)
                    received = await asyncio.gather(*readers)
                    feed_pids = {pid for (pid,) in await (await db.execute(FEED_PIDS)).fetchall()}
    assert silent.isdisjoint(senders)
    assert feed_pids & set(senders), "no pass shared a wake-up while writers skipped NOTIFY"
    for messages in received:
        names = [m["payload"]["record"]["name"] for m in messages]
        assert names.count("while polling") == 1 and names[-1] == "late"
        assert sum(name.startswith("load ") for name in names) == loaded
        ids = [m["id"] for m in messages]
        assert ids == sorted(set(ids))
