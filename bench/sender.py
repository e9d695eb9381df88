"""The broadcast sender process: one WebSocket connection that sends clients' broadcasts at a paced rate.

It is a member of the channel like any client (a broadcast is only accepted on a subscribed channel) and
does not receive its own messages (`self` is off). Each message carries its number and the wall-clock
time it was handed to the socket; the report pairs the two, as the writer's does for commits, so that
latency is the subscriber's receipt minus the send, on the same clock.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Awaitable, Callable
from multiprocessing.queues import Queue
from typing import Any

import orjson
import uvloop

from bench import channel_clients, workers, wsclient
from bench.deliveries import WriterReport
from bench.writer import payload_text

OPEN_TIMEOUT = 30.0


class _Sender:
    """The worker's state: its connection, and the number of the next message (growing across
    measurements, so that a late message of an earlier one is recognized as stale)."""

    def __init__(self) -> None:
        self._connection: wsclient.Subscription | None = None
        self._channel = b""
        self._next = 1

    async def connect(self, url: str, channel: str) -> None:
        await self.close()
        async with asyncio.timeout(OPEN_TIMEOUT):
            self._connection = await wsclient.subscribe(url, channel)
            # The channel's presence_state follows the ack: not a refusal.
            while not self._connection.other_frames:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        self._connection.other_frames = 0
        self._channel = orjson.dumps(channel)

    async def paced(self, rate: float, duration: float, payload_bytes: int) -> WriterReport:
        """`rate * duration` broadcasts on an absolute schedule (no drift)."""
        connection = self._connection
        if connection is None or not connection.is_open:
            raise RuntimeError("the sender is not connected (or the server closed its connection)")
        padding = payload_text(payload_bytes).encode()
        report = WriterReport(array("q"), array("d"))
        interval = 1.0 / rate
        start = time.monotonic()
        for index in range(round(rate * duration)):
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -interval:
                report.late += 1
            number, self._next = self._next, self._next + 1
            sent_at = time.time()
            connection.send_text(channel_clients.broadcast_frame(self._channel, number, sent_at, padding))
            report.ids.append(number)
            report.committed_at.append(sent_at)
        report.elapsed = time.monotonic() - start
        report.statements = len(report.ids)
        report.cpu = time.process_time()
        return report

    async def refused(self) -> int:
        """Frames other than heartbeats the server sent the sender since the last call (errors: a rate
        limit, say), counting a closed connection as one; a clean measurement has none."""
        connection = self._connection
        if connection is None:
            return 0
        count = connection.other_frames + (not connection.is_open)
        connection.other_frames = 0
        return count

    async def cpu(self) -> float:
        return time.process_time()

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close(abort=True)
            self._connection = None


def run(requests: Queue[workers.Command | None], responses: Queue[Any]) -> None:
    """Worker process entry point."""
    workers.raise_fd_limit()
    state = _Sender()
    commands: dict[str, Callable[..., Awaitable[Any]]] = {
        "connect": state.connect,
        "paced": state.paced,
        "refused": state.refused,
        "cpu": state.cpu,
        "close": state.close,
    }
    uvloop.run(workers.serve_async(requests, responses, commands))
