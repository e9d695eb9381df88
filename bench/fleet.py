"""Client processes holding tens of thousands of resuming subscribers each (bench/resuming.py).

`FleetPool` is the coordinator's side: it spreads clients over worker processes, opens them at a
bounded number in flight, waits for them to be live again after a restart, and gathers each process's
verdict on what its clients received. The worker side (`run`) keeps its clients on one uvloop loop.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import uvloop

from bench import placement, workers
from bench.resuming import Fleet, ResumingClient, describe_stranded

POLL = 0.05


@dataclass(frozen=True)
class Status:
    """One process's clients now."""

    clients: int
    live: int
    pending: int
    attempts: int
    failures: int
    refusals: int
    errors: list[str]
    rss_bytes: int
    cpu_seconds: float
    outcomes: dict[str, int]  # attempts by outcome (bench.resuming.Fleet.outcomes)


@dataclass(frozen=True)
class Verdict:
    """What one process's clients received, against the log's rows (first, last, count, sum)."""

    exact: int  # clients that received every row of the log once, in order
    short: int  # live at the end, yet received fewer rows than the log holds (lost changes)
    stranded: int  # not live at the end (still reconnecting): judged by nothing else
    disorder: int  # clients that saw a row again or out of order
    wrong: int  # the right count but not the log's rows (first, last or sum differ)
    reconnects: int
    live_at: array[float]  # when each client that lost its connection after `lost_after` was live again
    # (clients not live again are left out: their live_at is from before)
    connect_s: array[float]  # for each of those, in the same order: its live attempt's time in connect()
    wait_s: array[float]  # and from connect()'s return to the 101
    received_at: array[float]  # when each client received the last row (0: never)
    stranded_sample: list[str]  # what a few of the stranded were doing (resuming.describe_stranded)


class _Clients:
    """The worker's state."""

    def __init__(self) -> None:
        self.fleet: Fleet | None = None
        self.clients: list[ResumingClient] = []

    async def open(
        self, settings: Mapping[str, Any], count: int, first_index: int, in_flight: int, seconds: float
    ) -> float:
        """`count` clients, at most `in_flight` attempts at a time; returns the seconds until all were
        live (or `seconds` passed)."""
        if self.fleet is None:
            self.fleet = Fleet(**settings)
        fleet = self.fleet
        started = time.monotonic()
        deadline = started + seconds
        for index in range(first_index, first_index + count):
            while fleet.pending >= in_flight and time.monotonic() < deadline:
                fleet.changed.clear()
                await fleet.changed.wait()
            client = ResumingClient(fleet, index)
            self.clients.append(client)
            client.start()
        await self.wait_live(deadline - time.monotonic())
        return time.monotonic() - started

    async def status(self) -> Status:
        fleet = self.fleet
        return Status(
            len(self.clients),
            sum(c.live for c in self.clients),
            fleet.pending if fleet else 0,
            fleet.attempts if fleet else 0,
            fleet.failures if fleet else 0,
            fleet.refusals if fleet else 0,
            list(fleet.errors) if fleet else [],
            _rss_bytes(),
            time.process_time(),
            dict(fleet.outcomes) if fleet else {},
        )

    async def wait_rows(self, row_id: int, seconds: float) -> int:
        """Until every client received row `row_id` (for `seconds` at most); how many have."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(  # noqa: ASYNC110
            c.last_row < row_id for c in self.clients
        ):
            await asyncio.sleep(POLL)
        return sum(c.last_row >= row_id for c in self.clients)

    async def wait_live(self, seconds: float) -> int:
        """Until every client is live (for `seconds` at most); how many are."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(not c.live for c in self.clients):  # noqa: ASYNC110
            await asyncio.sleep(POLL)
        return sum(c.live for c in self.clients)

    async def verdict(self, first: int, last: int, count: int, total: int, lost_after: float) -> Verdict:
        exact = short = stranded = disorder = wrong = 0
        for c in self.clients:
            if not c.live:
                stranded += 1
            elif c.disorder:
                disorder += 1
            elif c.count < count:
                short += 1
            elif (c.first_row, c.last_row, c.count, c.row_sum) == (first, last, count, total):
                exact += 1
            else:
                wrong += 1
        again = [c for c in self.clients if c.live and c.live_at > c.lost_at >= lost_after]
        return Verdict(
            exact,
            short,
            stranded,
            disorder,
            wrong,
            sum(c.reconnects for c in self.clients),
            array("d", (c.live_at for c in again)),
            array("d", (c.connect_s for c in again)),
            array("d", (c.wait_s for c in again)),
            array("d", (c.last_received_at if c.last_row == last else 0.0 for c in self.clients)),
            [describe_stranded(c) for c in self.clients if not c.live][:5],
        )

    async def forget(self) -> int:
        """Reset every client's record of what it received (the start of a measurement)."""
        for c in self.clients:
            c.count = c.first_row = c.last_row = c.row_sum = c.disorder = c.reconnects = 0
        return len(self.clients)

    async def close(self) -> int:
        for c in self.clients:
            c.close()
        closed = len(self.clients)
        self.clients, self.fleet = [], None
        await asyncio.sleep(0.2)  # let the transports go
        return closed


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run(requests: Queue[workers.Command | None], responses: Queue[Any]) -> None:
    """Worker process entry point."""
    workers.raise_fd_limit()
    state = _Clients()
    commands: dict[str, Callable[..., Awaitable[Any]]] = {
        "open": state.open,
        "status": state.status,
        "wait_rows": state.wait_rows,
        "wait_live": state.wait_live,
        "verdict": state.verdict,
        "forget": state.forget,
        "close": state.close,
    }
    uvloop.run(workers.serve_async(requests, responses, commands))


class FleetPool:
    """Client processes, started for one scenario run."""

    def __init__(self, processes: int) -> None:
        self.workers = [workers.Worker(f"fleet-{i}", run) for i in range(processes)]

    def _all(self, command: str, *args: Any, timeout: float) -> list[Any]:
        return workers.call_all(self.workers, command, [args] * len(self.workers), timeout=timeout)

    def open(
        self,
        settings: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        total: int,
        in_flight: int,
        timeout: float,
    ) -> float:
        """`total` more clients, spread evenly, each process with `in_flight` attempts at most; returns
        the wall seconds until all were live. `settings` (bench/resuming.py's Fleet: host, port, channel,
        sources) are every process's, or one per process (each its own instance); a process keeps those
        of its first call."""
        each = [settings] * len(self.workers) if isinstance(settings, Mapping) else list(settings)
        if len(each) != len(self.workers):
            raise ValueError(f"{len(each)} settings for {len(self.workers)} client processes")
        counts = placement.split(total, len(self.workers))
        status = self.status()
        # Indexes continue across calls, so that clients keep spreading over the source addresses.
        base = sum(s.clients for s in status)
        starts = [base + sum(counts[:i]) for i in range(len(counts))]
        args = [
            (dict(s), n, start, in_flight, timeout) for s, n, start in zip(each, counts, starts, strict=True)
        ]
        started = time.monotonic()
        workers.call_all(self.workers, "open", args, timeout=timeout + 60)
        return time.monotonic() - started

    def status(self) -> list[Status]:
        return self._all("status", timeout=60)

    def cpu_seconds(self) -> float:
        """CPU the client processes have used so far (user and system)."""
        return sum(s.cpu_seconds for s in self.status())

    def wait_rows(self, row_id: int, timeout: float) -> int:
        return sum(self._all("wait_rows", row_id, timeout, timeout=timeout + 60))

    def wait_live(self, timeout: float) -> int:
        return sum(self._all("wait_live", timeout, timeout=timeout + 60))

    def verdicts(self, first: int, last: int, count: int, total: int, lost_after: float) -> list[Verdict]:
        return self._all("verdict", first, last, count, total, lost_after, timeout=120)

    def forget(self) -> int:
        return sum(self._all("forget", timeout=60))

    def close(self) -> int:
        return sum(self._all("close", timeout=120))

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
