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

    async def connect(
        self, url: str, channel: str, total: int, tokens: Sequence[tuple[int, str]] | None = None
    ) -> Connected:
        """Open connections subscribed to `channel` until `total` are open (reopening any the server
        closed); each counts once the server acked its subscribe. With `tokens` ((tag, token) for each
        of the `total` connections), the ones opened carry the tokens of the connections missing."""
        current = [s for s in self.subscriptions.get((url, channel), []) if s.is_open]
        started = time.monotonic()
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        if tokens is None:
            wanted: list[tuple[int, str | None]] = [(0, None)] * (total - len(current))
        else:
            # Which tokens still have an open connection, by tag: open the rest.
            left: dict[int, int] = {}
            for subscription in current:
                left[subscription.tag] = left.get(subscription.tag, 0) + 1
            wanted = []
            for tag, token in tokens:
                if left.get(tag, 0):
                    left[tag] -= 1
                else:
                    wanted.append((tag, token))

        async def open_one(tag: int, token: str | None) -> wsclient.Subscription:
            async with limit, asyncio.timeout(OPEN_TIMEOUT):
                return await wsclient.subscribe(url, channel, token, tag)

        opened = await asyncio.gather(*(open_one(tag, token) for tag, token in wanted))
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
        # With owners, a connection's last change is its owner's last one.
        last_ids = dict(zip(report.owners, report.ids, strict=True)) if report.owners else {}
        subscriptions = list(self._all())
        deadline = time.monotonic() + drain_timeout
        # Polling keeps the per-frame path free of any bookkeeping for this check.
        while time.monotonic() < deadline and any(  # noqa: ASYNC110
            s.is_open and (not s.ids or s.ids[-1] < last_ids.get(s.tag, last_id))
            for s in subscriptions
            if not report.owners or s.tag in last_ids
        ):
            await asyncio.sleep(POLL)
        cpu = time.process_time()
        if report.owners:
            sample = deliveries.judge_owned(subscriptions, report.ids, report.committed_at, report.owners)
        else:
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

    def connect(
        self,
        url: str,
        channel: str,
        total: int,
        processes: int | None = None,
        tokens: Sequence[tuple[int, str]] | None = None,
    ) -> Connected:
        """Bring the connections subscribed to `channel` up to `total`, spread over `processes` workers;
        with `tokens`, (tag, token) for each of the `total` connections (sent as `?token=`).
        `seconds` is the wall time of the whole operation, as the coordinator saw it."""
        chosen = self.workers[: processes or len(self.workers)]
        counts = spread(total, len(chosen))
        if tokens is not None and len(tokens) != total:
            raise ValueError(f"{len(tokens)} tokens for {total} connections")
        starts = [sum(counts[:i]) for i in range(len(counts))]
        args = [
            (url, channel, n, None if tokens is None else list(tokens[start : start + n]))
            for n, start in zip(counts, starts, strict=True)
        ]
        started = time.monotonic()
        answers = workers.call_all(chosen, "connect", args, timeout=OPEN_TIMEOUT * 4 + total / 100)
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
