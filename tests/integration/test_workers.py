"""`fluxbase-realtime serve` with REALTIME_WORKERS=3 on a scratch database: the workers share one port,
the stats and /metrics of any of them answer for all, a worker killed with kill -9 is restarted while its
clients resume on the others with nothing lost or repeated, SIGTERM closes every client with 1001 and stops
every worker, and no worker outlives a supervisor killed with kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families as parse
from psycopg import sql
from websockets.exceptions import ConnectionClosed

from fluxbase_realtime_client import Backoff, Change, RealtimeClient
from tests.support.client import realtime_client
from tests.support.databases import scratch_database
from tests.support.metrics import scrape, value
from tests.support.processes import ServerProcess, server_process
from tests.support.row_writer import SENTINEL, RowWriter

WORKERS = 3
SERVE = [sys.executable, "-m", "app", "serve"]
# Connections are made until at least two workers hold some (the kernel hashes each connection's
# addresses): at least MIN_CLIENTS; MAX_CLIENTS all on one worker would mean the port is not shared.
MIN_CLIENTS, MAX_CLIENTS = 6, 30
SDK_CLIENTS = 6
WAIT = 60.0  # a bound against hanging, never a measurement of speed
# How long a request through the port waits before trying a new connection, when the kernel may have given
# it to a stopped worker: well above the workers' own wait for a sibling (REALTIME_WORKER_TIMEOUT, 1 s).
STUCK_BOUND = 3.0
# The figures a worker sums over its siblings (app.workers.figures.SUMMED, those of trigger mode).
SUMMED = (
    "connections",
    "channels",
    "slow_consumer_disconnects",
    "rls_checks",
    "rls_changes",
    "broadcasts_sent",
    "bus_messages_received",
    "bus_messages_dropped",
)


@dataclass
class Instance:
    server: ServerProcess
    database_url: str
    table: str


def _environment(database_url: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "REALTIME_WORKERS": str(WORKERS), "LOG_LEVEL": "warning"}


@pytest.fixture(scope="module")
async def instance(server_url: str) -> AsyncIterator[Instance]:
    """The supervisor on a scratch database it migrates itself, every worker up, and a realtime table."""
    with scratch_database(server_url) as database_url:
        async with server_process(_environment(database_url)) as server:
            await _until_stats(server, _all_up)
            table = f"items_{uuid.uuid4().hex[:10]}"
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
                await db.execute(
                    sql.SQL("CREATE TABLE public.{} (id serial PRIMARY KEY, name text)").format(
                        sql.Identifier(table)
                    )
                )
                await db.execute("SELECT enable_realtime('public', %s)", (table,))
            yield Instance(server, database_url, table)


async def test_the_port_is_shared_and_any_worker_answers_for_all(instance: Instance) -> None:
    server, channel = instance.server, f"table:public.{instance.table}"
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        spread: dict[int, int] = {}
        while len(clients) < MIN_CLIENTS or sum(1 for n in spread.values() if n) < 2:
            assert len(clients) < MAX_CLIENTS, f"every connection landed on one worker: {spread}"
            client = await stack.enter_async_context(realtime_client(server.ws_url))
            await client.subscribe(channel)
            clients.append(client)
            spread = {w["worker"]: w["connections"] for w in (await _stats(server))["workers"]}

        whole = await _stats(server)
        workers = whole["workers"]
        assert [w["worker"] for w in workers] == list(range(WORKERS)) and whole["workers_missing"] == []
        assert whole["connections"] == len(clients)
        for key in SUMMED:
            assert whole[key] == sum(w[key] for w in workers), key

        async with httpx.AsyncClient(base_url=server.http_url) as http:
            samples = await scrape(http)
        assert all("worker" in dict(labels) for _, labels in samples), "a sample without its worker"
        for worker in workers:
            index = str(worker["worker"])
            assert value(samples, "fluxbase_realtime_workers_up", worker=index) == 1
            # The clients are idle: each worker's count is the same in both answers.
            assert value(samples, "fluxbase_realtime_connections", worker=index) == worker["connections"]

        # One change, then a sentinel: each client, whichever worker holds it, gets the change once.
        async with await psycopg.AsyncConnection.connect(instance.database_url, autocommit=True) as db:
            insert = sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier(instance.table))
            await db.execute(insert, ("once",))
            await db.execute(insert, (SENTINEL,))
        for client in clients:
            received = await client.until_broadcast(lambda m: m["payload"]["record"]["name"] == SENTINEL)
            assert [m["payload"]["record"]["name"] for m in received] == ["once", SENTINEL]


class Reader:
    """One SDK client on the port, keeping every change of the table's stream until the sentinel."""

    def __init__(self, url: str, table: str, progress: asyncio.Event) -> None:
        self.progress = progress
        self.client = RealtimeClient(
            url,
            backoff=Backoff(base=0.05, cap=0.5),
            # The watchdog (2.5 times this) stays far beyond the test's waits: a client reconnects because
            # its worker died, not because a heartbeat came late on a busy machine.
            heartbeat_interval=30.0,
            open_timeout=5.0,
            connect_options={"proxy": None},
            on_status=lambda _: progress.set(),
        )
        self.stream = self.client.changes(f"table:public.{table}")
        self.changes: list[Change] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.client.start()
        await self.stream.subscribed()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for change in self.stream:
            assert isinstance(change, Change), change  # a Reset would mean history was lost
            self.changes.append(change)
            self.progress.set()
            if self.done:
                return

    @property
    def done(self) -> bool:
        return bool(self.changes) and (self.changes[-1].record or {}).get("name") == SENTINEL

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()


async def test_a_killed_worker_is_restarted_and_its_clients_lose_nothing(instance: Instance) -> None:
    server, progress = instance.server, asyncio.Event()
    readers = [Reader(server.ws_url, instance.table, progress) for _ in range(SDK_CLIENTS)]
    async with await psycopg.AsyncConnection.connect(instance.database_url, autocommit=True) as db:
        try:
            for reader in readers:
                await reader.start()
            await _kill_a_worker_while_writing(instance, readers, progress)
            await _until(progress, lambda: all(r.done for r in readers))
        finally:
            await asyncio.gather(*(r.close() for r in readers))
        rows = await db.execute(
            sql.SQL("SELECT id, name FROM {} ORDER BY id").format(sql.Identifier(instance.table))
        )
        written = [(row[0], row[1]) for row in await rows.fetchall()]
    # The readers subscribed before the writer began: each holds every row from its first (w0) to the
    # sentinel, once and in order.
    expected = written[[name for _, name in written].index("w0") :]
    for reader in readers:
        got = [((c.record or {})["id"], (c.record or {})["name"]) for c in reader.changes]
        assert got == expected, "a change was lost or repeated"


async def _kill_a_worker_while_writing(
    instance: Instance, readers: list[Reader], progress: asyncio.Event
) -> None:
    server = instance.server
    writer = RowWriter(instance.database_url, instance.table)
    writing = asyncio.create_task(writer.run())
    try:
        await _until(progress, lambda: all(len(r.changes) >= 3 for r in readers))
        doomed = max((await _stats(server))["workers"], key=lambda w: int(w["connections"]))
        assert doomed["connections"] >= 1
        os.kill(doomed["pid"], signal.SIGKILL)
        # Its clients, and only they, reconnect to the same port (the kernel sends them to a live worker).
        moved = doomed["connections"]
        await _until(progress, lambda: sum(r.client.connects >= 2 for r in readers) >= moved)
        assert sorted(r.client.connects for r in readers) == [1] * (SDK_CLIENTS - moved) + [2] * moved
        restarted = await _until_stats(
            server, lambda s: _all_up(s) and s["workers"][doomed["worker"]]["pid"] != doomed["pid"]
        )
        assert f"worker_restarted index={doomed['worker']} exit=-9" in server.output()
        assert restarted["connections"] == SDK_CLIENTS
        await writer.more(10)
    finally:
        writer.stop()
        await writing


async def test_a_worker_that_does_not_answer_is_reported_missing(instance: Instance) -> None:
    server = instance.server
    stuck = (await _until_stats(server, _all_up))["workers"][1]
    os.kill(stuck["pid"], signal.SIGSTOP)
    try:
        # Asked through the port, whichever other worker answers reports the stuck one missing.
        whole = await _answered(server, "/api/realtime/stats")
        assert whole.json()["workers_missing"] == [1]
        assert [w["worker"] for w in whole.json()["workers"]] == [0, 2]
        exposition = (await _answered(server, "/metrics")).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for f in parse(exposition) for s in f.samples
        }
        assert value(samples, "fluxbase_realtime_workers_up", worker="1") == 0
        assert value(samples, "fluxbase_realtime_workers_up", worker="0") == 1
        assert not any(
            dict(labels).get("worker") == "1" for name, labels in samples if "workers_up" not in name
        )
    finally:
        os.kill(stuck["pid"], signal.SIGCONT)
    await _until_stats(server, _all_up)


async def _answered(server: ServerProcess, path: str) -> httpx.Response:
    """GET `path` through the port; a connection the kernel gave to the stopped worker is never answered, so
    it is given up (after a bound, not a measurement) and tried again on a new connection."""
    async with asyncio.timeout(WAIT):
        while True:
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                with contextlib.suppress(httpx.TimeoutException):
                    response = await http.get(path, timeout=STUCK_BOUND)
                    assert response.status_code == 200, response.text
                    return response


async def test_the_workers_share_the_instance_listen_backlog(instance: Instance) -> None:
    """Each worker listens with its share of REALTIME_LISTEN_BACKLOG (default 4096), not all of it: a
    connection waits behind its own worker's queue, which that worker drains at 1/N of the instance's rate."""
    listing = await asyncio.create_subprocess_exec(
        "ss", "-Hltn", f"sport = :{instance.server.port}", stdout=asyncio.subprocess.PIPE
    )
    output, _ = await listing.communicate()
    # LISTEN lines: State, Recv-Q (waiting now), Send-Q (the backlog), local and peer addresses.
    backlogs = [int(line.split()[2]) for line in output.decode().splitlines() if line.startswith("LISTEN")]
    assert backlogs == [-(-4096 // WORKERS)] * WORKERS, output.decode()


async def test_a_second_instance_on_the_same_port_is_refused(instance: Instance) -> None:
    """SO_REUSEPORT would let a second supervisor's workers join the first's on the port (each then taking
    part of the other's clients); it must fail as a single process does, with a message and no worker."""
    env = {**os.environ, **_environment(instance.database_url)}
    command = [*SERVE, "--host", "127.0.0.1", "--port", str(instance.server.port), "--no-migrate"]
    second = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(WAIT):
            output, _ = await second.communicate()
    finally:
        if second.returncode is None:  # it served: stop it and its workers (they follow it)
            second.kill()
            await second.wait()
    assert second.returncode == 1, output.decode(errors="replace")
    assert b"cannot serve on 127.0.0.1:" in output
    # The first instance still holds every client it had, all its workers answering.
    assert _all_up(await _stats(instance.server))


async def test_sigterm_closes_every_client_with_1001_and_stops_every_worker(instance: Instance) -> None:
    server = instance.server
    pids = [w["pid"] for w in (await _until_stats(server, _all_up))["workers"]]
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(realtime_client(server.ws_url)) for _ in range(MIN_CLIENTS)
        ]
        for client in clients:
            await client.subscribe(f"table:public.{instance.table}")
        server.process.send_signal(signal.SIGTERM)
        for client in clients:
            with pytest.raises(ConnectionClosed) as closed:
                await client.receive()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert await asyncio.to_thread(server.process.wait, WAIT) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # reaped by the supervisor before it exited
            os.kill(pid, 0)


async def test_no_worker_outlives_a_killed_supervisor(instance: Instance) -> None:
    async with server_process(_environment(instance.database_url), "--no-migrate") as server:
        pids = [w["pid"] for w in (await _until_stats(server, _all_up))["workers"]]
        assert server.kill() == -signal.SIGKILL
        try:
            # The kernel sends each worker SIGTERM (PR_SET_PDEATHSIG); whoever adopts them reaps them or not.
            async with asyncio.timeout(WAIT):
                while not all(_gone(pid) for pid in pids):  # noqa: ASYNC110 - no event tells a process's end
                    await asyncio.sleep(0.02)
        finally:
            for pid in pids:  # on failure, not left running after the test
                if not _gone(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def _all_up(stats: dict[str, Any]) -> bool:
    return len(stats.get("workers", [])) == WORKERS and stats.get("workers_missing") == []


async def _stats(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/api/realtime/stats", timeout=10.0)
    assert response.status_code == 200, response.text
    stats: dict[str, Any] = response.json()
    return stats


async def _until_stats(server: ServerProcess, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first stats for which `condition` holds (asked again every 50 ms, WAIT at most)."""
    async with asyncio.timeout(WAIT):
        while True:
            with contextlib.suppress(httpx.TransportError):
                stats = await _stats(server)
                if condition(stats):
                    return stats
            await asyncio.sleep(0.05)


async def _until(progress: asyncio.Event, condition: Callable[[], bool]) -> None:
    """Until `condition` holds, looked at again whenever a reader receives a change or reconnects."""
    async with asyncio.timeout(WAIT):
        while not condition():
            progress.clear()
            await progress.wait()
