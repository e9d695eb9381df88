"""A subscriber process: many WebSocket connections on one asyncio loop, timing every broadcast."""

from __future__ import annotations

import asyncio
import resource
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

# Opening hundreds of connections at once only measures the accept backlog; a few at a time is enough.
CONNECT_CONCURRENCY = 16
OPEN_TIMEOUT = 15.0
CLOSE_TIMEOUT = 5.0


@dataclass
class Deliveries:
    """What one connection received: row ids with their wall-clock receive times, and how it ended."""

    ids: array[int] = field(default_factory=lambda: array("q"))
    received_at: array[float] = field(default_factory=lambda: array("d"))
    other_frames: int = 0  # neither a broadcast nor a heartbeat: an error frame, say
    close_code: int | None = None  # set when the server closed the connection during the run


def run(url: str, channel: str, count: int, control: Queue[Any], results: Queue[Any]) -> None:
    """Process entry point. Puts ("ready", CPU seconds so far) once every connection is acked, waits for
    (expected, drain_timeout) on `control`, then puts ("report", ([Deliveries, ...], CPU seconds))."""
    _raise_fd_limit()
    try:
        asyncio.run(_main(url, channel, count, control, results))
    except BaseException as error:
        results.put(("error", "clients", repr(error)))
        raise


def _raise_fd_limit() -> None:
    # Each connection is a file descriptor; the default soft limit (often 1024) is too low for fan-out.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else hard  # Linux refuses an infinite soft limit
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _main(url: str, channel: str, count: int, control: Queue[Any], results: Queue[Any]) -> None:
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connections = await asyncio.gather(*(_open(url, channel, limit) for _ in range(count)))
    deliveries = [Deliveries() for _ in connections]
    readers = [asyncio.create_task(_read(c, d)) for c, d in zip(connections, deliveries, strict=True)]
    results.put(("ready", time.process_time()))
    # A blocking queue read would stall the loop, and with it every reader.
    expected, drain_timeout = await asyncio.to_thread(control.get)
    await _drain(deliveries, expected, drain_timeout)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    async with asyncio.timeout(CLOSE_TIMEOUT * 2):
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
    results.put(("report", (deliveries, time.process_time())))


async def _open(url: str, channel: str, limit: asyncio.Semaphore) -> ClientConnection:
    """Connect and subscribe; returns only after the server's ack."""
    async with limit:
        connection = await connect(
            url, open_timeout=OPEN_TIMEOUT, close_timeout=CLOSE_TIMEOUT, ping_interval=None
        )
        await connection.send(orjson.dumps({"type": "subscribe", "channel": channel}).decode())
        async with asyncio.timeout(OPEN_TIMEOUT):
            while True:
                reply = orjson.loads(await connection.recv())
                if reply.get("type") == "ack":
                    return connection
                if reply.get("type") != "heartbeat":
                    raise RuntimeError(f"subscribe to {channel} failed: {reply}")


async def _read(connection: ClientConnection, deliveries: Deliveries) -> None:
    """Record every broadcast until cancelled or closed by the server."""
    try:
        async for frame in connection:
            # Taken before parsing, so the client's own JSON work is not counted as latency.
            now = time.time()
            message = orjson.loads(frame)
            kind = message.get("type")
            if kind == "broadcast":
                deliveries.ids.append(message["payload"]["record"]["id"])
                deliveries.received_at.append(now)
            elif kind != "heartbeat":
                deliveries.other_frames += 1
    except ConnectionClosed:
        pass
    deliveries.close_code = connection.close_code


async def _drain(deliveries: list[Deliveries], expected: int, seconds: float) -> None:
    """Wait until every open connection has `expected` broadcasts, or `seconds` pass."""
    deadline = time.monotonic() + seconds
    # Polling keeps the readers' per-frame path free of any bookkeeping for this check.
    while time.monotonic() < deadline and any(  # noqa: ASYNC110
        len(d.ids) < expected and d.close_code is None for d in deliveries
    ):
        await asyncio.sleep(0.05)
