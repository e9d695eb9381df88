"""Subscriber processes: many WebSocket connections per process, kept open across measurements.

`SubscriberPool` is the coordinator's side: it spreads connections over a few worker processes and
asks them to connect, forget what they received, or judge what they received against a writer's
commits. The worker side (`run`) keeps its connections on one uvloop event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any

import uvloop

from bench import deliveries, workers, wsclient
from bench.channel_clients import BroadcastReceiver, PresenceMember
from bench.deliveries import Sample, WriterReport

# Opening hundreds of connections at once only measures the accept backlog; a few at a time is enough.
CONNECT_CONCURRENCY = 16
OPEN_TIMEOUT = 30.0
POLL = 0.01


# What a connection does with what it receives: table changes, clients' broadcasts, or presence.
KINDS: dict[str, type[wsclient.Subscription]] = {
    "table": wsclient.Subscription,
    "broadcast": BroadcastReceiver,
    "presence": PresenceMember,
}


@dataclass(frozen=True)
class PresenceSeen:
    """What one process's presence members on a channel saw since their tracks: when each reached the
    expected count (None: never), and what presence diffs cost them."""

    full_at: list[float | None]
    members: list[int]
    diff_bytes: int
    diff_frames: int
    errors: list[str]
    closed: int


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
        self,
        url: str,
        channel: str,
        total: int,
        tokens: Sequence[tuple[int, str | None]] | None = None,
        kind: str = "table",
        filters: dict[int, str] | None = None,
    ) -> Connected:
        """Open connections subscribed to `channel` until `total` are open (reopening any the server
        closed); each counts once the server acked its subscribe. With `tokens` ((tag, token) for each
        of the `total` connections), the ones opened carry the tokens of the connections missing; with
        `filters`, a connection tagged T subscribes with the row filter `filters[T]`."""
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
                row_filter = filters.get(tag) if filters else None
                return await wsclient.subscribe(url, channel, token, tag, KINDS[kind], row_filter)

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

    async def collect(self, report: WriterReport, drain_timeout: float) -> tuple[dict[str, Sample], float]:
        """Wait until every open connection received the last committed row (or the timeout), judge
        what arrived since the last reset, and reset. Returns the samples of the connections to each
        server (by url) and CPU seconds so far."""
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
        samples: dict[str, Sample] = {}
        for url in {url for url, _ in self.subscriptions}:
            group = [s for (u, _), g in self.subscriptions.items() if u == url for s in g]
            if report.owners:
                samples[url] = deliveries.judge_owned(group, report.ids, report.committed_at, report.owners)
            else:
                samples[url] = deliveries.judge(group, report.ids, report.committed_at)
        for subscription in subscriptions:
            subscription.reset()
        return samples, cpu

    async def track(
        self, channel: str, target: int, start_at: float, interval: float, offset: int, stride: int
    ) -> int:
        """Each presence member on `channel` expects `target` presences, then tracks: the i-th of this
        process's members (alternating between servers) at wall-clock `start_at` + (offset + i * stride)
        * `interval`. Returns at once (the tracks are scheduled); the number of members."""
        members = self._members(channel)
        for member in members:
            member.expect(target)
        loop = asyncio.get_running_loop()
        for i, member in enumerate(members):
            number = offset + i * stride
            delay = start_at + number * interval - time.time()
            loop.call_later(max(0.0, delay), member.track, number)
        return len(members)

    async def presence(self, channel: str, drain_timeout: float) -> PresenceSeen:
        """Wait until every open member on `channel` saw its expected count (or the timeout)."""
        members = self._members(channel)
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline and any(  # noqa: ASYNC110
            m.is_open and m.full_at is None for m in members
        ):
            await asyncio.sleep(POLL)
        return PresenceSeen(
            [m.full_at for m in members],
            [m.members for m in members],
            sum(m.diff_bytes for m in members),
            sum(m.diff_frames for m in members),
            [error for m in members for error in m.errors],
            sum(not m.is_open for m in members),
        )

    def _members(self, channel: str) -> list[PresenceMember]:
        """This process's presence members on `channel`, alternating between the servers they are on."""
        groups = [
            [s for s in group if isinstance(s, PresenceMember)]
            for (_, name), group in sorted(self.subscriptions.items())
            if name == channel
        ]
        return [m for round_ in itertools.zip_longest(*groups) for m in round_ if m is not None]

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
        "track": state.track,
        "presence": state.presence,
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
        tokens: Sequence[tuple[int, str | None]] | None = None,
        kind: str = "table",
        filters: dict[int, str] | None = None,
    ) -> Connected:
        """Bring the connections subscribed to `channel` up to `total`, spread over `processes` workers;
        with `tokens`, (tag, token) for each of the `total` connections (sent as `?token=`, unless None);
        `kind`: what they read (KINDS); with `filters`, each tag's row filter.
        `seconds` is the wall time of the whole operation, as the coordinator saw it."""
        chosen = self.workers[: processes or len(self.workers)]
        counts = spread(total, len(chosen))
        if tokens is not None and len(tokens) != total:
            raise ValueError(f"{len(tokens)} tokens for {total} connections")
        starts = [sum(counts[:i]) for i in range(len(counts))]
        args = [
            (url, channel, n, None if tokens is None else list(tokens[start : start + n]), kind, filters)
            for n, start in zip(counts, starts, strict=True)
        ]
        started = time.monotonic()
        # A floor of 20 subscribes/s: subscribes with filters are checked by PostgreSQL, on a busy machine.
        answers = workers.call_all(chosen, "connect", args, timeout=OPEN_TIMEOUT * 4 + total / 20)
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
        sample, _, cpu = self.collect_by_url(report, drain_timeout)
        return sample, cpu

    def collect_by_url(
        self, report: WriterReport, drain_timeout: float
    ) -> tuple[Sample, dict[str, Sample], float]:
        """`collect`, with the merged sample of the connections to each server (by url) as well."""
        answers = workers.call_all(
            self.workers,
            "collect",
            [(report, drain_timeout)] * len(self.workers),
            timeout=drain_timeout + 120,
        )
        parts = [sample for samples, _ in answers for sample in samples.values()]
        by_url = {
            url: deliveries.merge(samples[url] for samples, _ in answers if url in samples)
            for url in {url for samples, _ in answers for url in samples}
        }
        return deliveries.merge(parts), by_url, sum(a[1] for a in answers)

    def track(self, channel: str, target: int, start_at: float, interval: float) -> int:
        """Every presence member on `channel` expects `target` presences and tracks, the n-th of them
        (spread over processes and servers) at wall-clock `start_at` + n * `interval`."""
        count = len(self.workers)
        args = [(channel, target, start_at, interval, i, count) for i in range(count)]
        return sum(workers.call_all(self.workers, "track", args, timeout=30))

    def presence(self, channel: str, timeout: float) -> list[PresenceSeen]:
        return workers.call_all(
            self.workers, "presence", [(channel, timeout)] * len(self.workers), timeout=timeout + 60
        )

    def close(self, *, abort: bool = False) -> int:
        return sum(workers.call_all(self.workers, "close", [(abort,)] * len(self.workers), timeout=60))

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def spread(total: int, parts: int) -> Sequence[int]:
    """`total` split into `parts` near-equal counts."""
    share, extra = divmod(total, parts)
    return [share + (i < extra) for i in range(parts)]
