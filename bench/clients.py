"""Subscriber processes: many WebSocket connections per process, kept open across measurements.

`SubscriberPool` is the coordinator's side: it spreads connections over a few worker processes and
asks them to connect, forget what they received, or judge what they received against a writer's
commits. The worker side (`run`) keeps its connections on one uvloop event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any

import uvloop

from bench import deliveries, workers, wsclient
from bench.deliveries import Sample, WriterReport

# Opening hundreds of connections at once only measures the accept backlog; a few at a time is enough.
CONNECT_CONCURRENCY = 16
OPEN_TIMEOUT = 30.0
POLL = 0.01


@dataclass(frozen=True)
class Connected:
    """The outcome of a connect command: connections opened by it, open now, and how long it took."""

    opened: int
    open_now: int
    seconds: float


class _Connections:
    """The worker's state: its open subscriptions, by (url, channel)."""

    def __init__(self) -> None:
        self.subscriptions: dict[tuple[str, str], list[wsclient.Subscription]] = {}

    async def connect(self, url: str, channel: str, total: int) -> Connected:
        """Open connections subscribed to `channel` until `total` are open (reopening any the server
        closed); each counts once the server acked its subscribe."""
        current = [s for s in self.subscriptions.get((url, channel), []) if s.is_open]
        started = time.monotonic()
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def open_one() -> wsclient.Subscription:
            async with limit, asyncio.timeout(OPEN_TIMEOUT):
                return await wsclient.subscribe(url, channel)

        opened = await asyncio.gather(*(open_one() for _ in range(total - len(current))))
        self.subscriptions[(url, channel)] = current + list(opened)
        return Connected(len(opened), total, time.monotonic() - started)

    async def reset(self) -> float:
        """Forget everything received so far; returns this process's CPU seconds (the start of a span)."""
        for subscription in self._all():
            subscription.reset()
        return time.process_time()

    async def cpu(self) -> float:
        return time.process_time()

    async def collect(self, report: WriterReport, drain_timeout: float) -> tuple[Sample, float]:
        """Wait until every open connection received the last committed row (or the timeout), judge
        what arrived since the last reset, and reset. Returns the sample and CPU seconds so far."""
        last_id = report.ids[-1] if report.ids else 0
        subscriptions = list(self._all())
        deadline = time.monotonic() + drain_timeout
        # Polling keeps the per-frame path free of any bookkeeping for this check.
        while time.monotonic() < deadline and any(  # noqa: ASYNC110
            s.is_open and (not s.ids or s.ids[-1] < last_id) for s in subscriptions
        ):
            await asyncio.sleep(POLL)
        cpu = time.process_time()
        sample = deliveries.judge(subscriptions, report.ids, report.committed_at)
        for subscription in subscriptions:
            subscription.reset()
        return sample, cpu

    async def close(self, abort: bool) -> int:
        """Close every connection; with `abort`, drop them without a close handshake (fastest)."""
        subscriptions = list(self._all())
        for subscription in subscriptions:
            subscription.close(abort=abort)
        if not abort and subscriptions:
            await asyncio.wait([s.closed for s in subscriptions], timeout=10)
            for subscription in subscriptions:
                subscription.close(abort=True)  # any the server did not answer in time
        self.subscriptions.clear()
        return len(subscriptions)

    def _all(self) -> list[wsclient.Subscription]:
        return [s for group in self.subscriptions.values() for s in group]


def run(requests: Queue[workers.Command | None], responses: Queue[Any]) -> None:
    """Worker process entry point."""
    workers.raise_fd_limit()
    state = _Connections()
    commands: dict[str, Callable[..., Awaitable[Any]]] = {
        "connect": state.connect,
        "reset": state.reset,
        "cpu": state.cpu,
        "collect": state.collect,
        "close": state.close,
    }
    uvloop.run(workers.serve_async(requests, responses, commands))


class SubscriberPool:
    """Client worker processes, and how many connections each holds."""

    def __init__(self, processes: int) -> None:
        self.workers = [workers.Worker(f"clients-{i}", run) for i in range(processes)]

    def connect(self, url: str, channel: str, total: int, processes: int | None = None) -> Connected:
        """Bring the connections subscribed to `channel` up to `total`, spread over `processes` workers.
        `seconds` is the wall time of the whole operation, as the coordinator saw it."""
        chosen = self.workers[: processes or len(self.workers)]
        counts = spread(total, len(chosen))
        started = time.monotonic()
        answers = workers.call_all(
            chosen, "connect", [(url, channel, n) for n in counts], timeout=OPEN_TIMEOUT * 4 + total / 100
        )
        return Connected(
            sum(a.opened for a in answers), sum(a.open_now for a in answers), time.monotonic() - started
        )

    def reset(self) -> float:
        """Forget what was received; returns the client processes' total CPU seconds so far."""
        return float(sum(workers.call_all(self.workers, "reset", [()] * len(self.workers), timeout=30)))

    def cpu(self) -> float:
        return float(sum(workers.call_all(self.workers, "cpu", [()] * len(self.workers), timeout=30)))

    def collect(self, report: WriterReport, drain_timeout: float) -> tuple[Sample, float]:
        """The merged sample of every worker, and their total CPU seconds when they stopped waiting."""
        answers = workers.call_all(
            self.workers,
            "collect",
            [(report, drain_timeout)] * len(self.workers),
            timeout=drain_timeout + 120,
        )
        return deliveries.merge(a[0] for a in answers), sum(a[1] for a in answers)

    def close(self, *, abort: bool = False) -> int:
        return sum(workers.call_all(self.workers, "close", [(abort,)] * len(self.workers), timeout=60))

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def spread(total: int, parts: int) -> Sequence[int]:
    """`total` split into `parts` near-equal counts."""
    share, extra = divmod(total, parts)
    return [share + (i < extra) for i in range(parts)]
