"""Three instances on one database behind a real HAProxy (round robin, no sticky sessions) behave as one
service: one instance frozen (SIGSTOP) while rows commit, then killed with kill -9; its clients reconnect
through the balancer to the others and resume with `since`; every client ends with every committed change
exactly once and in order, broadcasts sent afterwards reach everyone, and the killed instance's presences
leave everywhere while the reconnected clients' presences come back."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import psycopg
from psycopg import sql

from fluxbase_realtime_client import Backoff, Broadcast, Change, PresenceDiff, PresenceState, RealtimeClient
from tests.conftest import JWT_SECRET
from tests.support.channels import room, token
from tests.support.haproxy import HAProxy, haproxy
from tests.support.processes import ServerProcess, server_process
from tests.support.row_writer import SENTINEL, RowWriter

INSTANCES = 3
CLIENTS = 6  # two per instance under round robin
# Short, so that the killed instance's presences leave quickly; bounds of the waits below, not asserted.
PRESENCE_TIMEOUT = 1.0
# The server's default heartbeat, and the client's watchdog at 2.5 times it: far beyond the test's waits, so a
# client notices the kill only because HAProxy closes its side when the instance's sockets die, and no
# client on a busy machine reconnects because a heartbeat came late.
HEARTBEAT = 30.0
WAIT = 60.0  # a bound against hanging, never a measurement of speed


class Member:
    """One SDK client through the balancer: a table stream, a broadcast channel it tracks presence on, and
    what it received of each (read continuously, so that waits are on events, not sleeps)."""

    def __init__(self, index: int, url: str, table: str, channel: str) -> None:
        self.sub = f"member-{index}"
        self.changed = asyncio.Event()
        self.client = RealtimeClient(
            url,
            token=token(self.sub),
            backoff=Backoff(base=0.05, cap=0.5),
            heartbeat_interval=HEARTBEAT,
            open_timeout=5.0,
            connect_options={"proxy": None},
            on_status=lambda _: self.changed.set(),
        )
        self.changes_stream = self.client.changes(f"table:public.{table}")
        self.room = self.client.channel(channel)
        self.changes: list[Change] = []
        self.broadcasts: list[Broadcast] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.client.start()
        await self.changes_stream.subscribed()
        await self.room.subscribed()
        await self.room.track({"sub": self.sub})
        self.tasks = [asyncio.create_task(self._read_changes()), asyncio.create_task(self._read_room())]

    async def _read_changes(self) -> None:
        async for change in self.changes_stream:
            assert isinstance(change, Change), change  # a Reset would mean history was lost
            self.changes.append(change)
            self.changed.set()
            if (change.record or {}).get("name") == SENTINEL:
                return

    async def _read_room(self) -> None:
        async for message in self.room:
            assert isinstance(message, Broadcast | PresenceState | PresenceDiff), message
            if isinstance(message, Broadcast):
                self.broadcasts.append(message)
            self.changed.set()

    def presences(self) -> dict[str, list[str]]:
        """{sub: [presence ids]} as this client's channel holds them."""
        return {k: [e.presence_id for e in es] for k, es in self.room.presence_state().items()}

    async def until(self, condition: Callable[[Member], bool]) -> None:
        """Wait until `condition(self)` holds, woken by each message this client receives; past WAIT, fail
        with what this client holds."""
        try:
            async with asyncio.timeout(WAIT):
                while not condition(self):
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.sub}: still waiting after {WAIT:g} s; connects={self.client.connects}, "
                f"changes={len(self.changes)}, presences={self.presences()}, "
                f"hellos from {sorted({str(b.payload) for b in self.broadcasts})}"
            ) from None

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.close()


@contextlib.asynccontextmanager
async def instances(database_url: str) -> AsyncIterator[list[ServerProcess]]:
    env = {
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "REALTIME_BUS_CHANNEL": f"bus_{uuid.uuid4().hex[:12]}",  # this test's instances only
        "REALTIME_PRESENCE_TIMEOUT": str(PRESENCE_TIMEOUT),
        "LOG_LEVEL": "warning",
    }
    async with contextlib.AsyncExitStack() as stack:
        started = await asyncio.gather(
            *(stack.enter_async_context(server_process(env, "--no-migrate")) for _ in range(INSTANCES))
        )
        yield list(started)


async def connections(server: ServerProcess) -> int:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        return int((await http.get("/api/realtime/stats", timeout=5.0)).json()["connections"])


async def test_a_killed_instance_behind_the_balancer_loses_nothing(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = room()
    async with instances(database_url) as servers, haproxy([s.port for s in servers]) as proxy:
        members = [Member(i, proxy.ws_url, table, channel) for i in range(CLIENTS)]
        try:
            # One after the other, so that round robin gives each instance the same number of clients.
            for member in members:
                await member.start()
            assert [await connections(s) for s in servers] == [CLIENTS // INSTANCES] * INSTANCES
            await _until_all_present(members)
            before = members[0].presences()
            await _kill_one_and_recover(servers, proxy, members, db, database_url, table, before)
        finally:
            await asyncio.gather(*(m.close() for m in members))


async def _kill_one_and_recover(
    servers: list[ServerProcess],
    proxy: HAProxy,
    members: list[Member],
    db: psycopg.AsyncConnection,
    database_url: str,
    table: str,
    before: dict[str, list[str]],
) -> None:
    writer = RowWriter(database_url, table)
    writing = asyncio.create_task(writer.run())
    try:
        # Every client is receiving the writes before the kill.
        for member in members:
            await member.until(lambda m: len(m.changes) >= 5)
        doomed, staying = servers[0], servers[1:]
        # Frozen first, while rows keep committing: those rows can reach its clients only by their resume
        # (`since`) on another instance, whatever the timing of their reconnect. Then kill -9.
        doomed.process.send_signal(signal.SIGSTOP)
        await writer.more(10)
        assert doomed.kill() == -9
        await proxy.until_states({"instance-0": "DOWN", "instance-1": "UP", "instance-2": "UP"})
        # Its clients, and only they, reconnect (through the balancer, to the others).
        moved = CLIENTS // INSTANCES
        await _until(members, lambda: sum(m.client.connects == 2 for m in members) == moved)
        assert sorted(m.client.connects for m in members) == [1] * (CLIENTS - moved) + [2] * moved
        assert sum([await connections(s) for s in staying]) == CLIENTS
        moved_subs = {m.sub for m in members if m.client.connects == 2}
        # Presence: the killed instance's entries leave everywhere; the moved clients are back, as new
        # presences; the others keep theirs.
        for member in members:
            await member.until(lambda m: _presence_settled(m.presences(), before, moved_subs))
        # Broadcasts sent now reach every other client, whichever instance each is on.
        for member in members:
            await member.room.send("hello", member.sub)
        for member in members:
            await member.until(lambda m: _hellos(m) == {n.sub for n in members} - {m.sub})
    finally:
        writer.stop()
        await writing
    # The sentinel is the last row: once each client holds it, it holds everything before it.
    for member in members:
        await member.until(lambda m: bool(m.changes) and _name(m.changes[-1]) == SENTINEL)
    rows = await db.execute(sql.SQL("SELECT id, name FROM {} ORDER BY id").format(sql.Identifier(table)))
    expected_rows = [(row[0], row[1]) for row in await rows.fetchall()]
    assert len(expected_rows) == writer.written + 1
    for member in members:
        ids = [change.id for change in member.changes]
        assert ids == sorted(set(ids)), f"{member.sub}: a change was repeated or reordered"
        got = [((c.record or {})["id"], _name(c)) for c in member.changes]
        assert got == expected_rows, f"{member.sub}: a change was lost"


def _name(change: Change) -> Any:
    return (change.record or {}).get("name")


def _hellos(member: Member) -> set[str]:
    return {b.payload for b in member.broadcasts if b.event == "hello"}


def _presence_settled(now: dict[str, list[str]], before: dict[str, list[str]], moved: set[str]) -> bool:
    """Each client present once; a moved client under a new presence id, the others under their old one."""
    if now.keys() != before.keys() or any(len(ids) != 1 for ids in now.values()):
        return False
    return all((now[sub] != before[sub]) == (sub in moved) for sub in now)


async def _until_all_present(members: list[Member]) -> None:
    subs = {m.sub for m in members}
    for member in members:
        await member.until(
            lambda m: m.presences().keys() == subs and all(len(i) == 1 for i in m.presences().values())
        )


async def _until(members: list[Member], condition: Callable[[], bool]) -> None:
    """Wait for a condition over all members (any member's event may change it)."""
    async with asyncio.timeout(WAIT):
        while True:
            for member in members:
                member.changed.clear()
            if condition():
                return
            waits = [asyncio.create_task(m.changed.wait()) for m in members]
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in pending:
                waiting.cancel()
