"""A WebSocket test client speaking the realtime protocol over a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.support.contract import check_server_frame

# Generous: a bound against hanging, never a measurement of speed.
RECEIVE_TIMEOUT = 15.0


class RealtimeClient:
    """A client over a real socket whose every received frame must be one of the protocol's server
    messages (tests/support/contract.py)."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.heartbeats = 0

    async def send(self, **message: Any) -> None:
        await self.connection.send(orjson.dumps(message).decode())

    async def send_raw(self, data: str | bytes) -> None:
        await self.connection.send(data)

    async def receive(self, *, skip_heartbeats: bool = True) -> dict[str, Any]:
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            while True:
                frame = await self.connection.recv()
                message: dict[str, Any] = orjson.loads(frame)
                # Every frame the suite reads is checked against docs/asyncapi.yaml, so the document
                # cannot drift from the code: a frame that matches no server message fails the test.
                check_server_frame(message)
                if message.get("type") == "heartbeat" and skip_heartbeats:
                    self.heartbeats += 1
                    continue
                return message

    async def subscribe(self, channel: str, **extra: Any) -> dict[str, Any]:
        await self.send(type="subscribe", channel=channel, **extra)
        reply = await self.receive()
        assert reply["type"] == "ack", reply
        return reply

    async def broadcasts(self, count: int) -> list[dict[str, Any]]:
        """The next `count` broadcasts; anything else arriving in between fails the test."""
        received = []
        while len(received) < count:
            message = await self.receive()
            assert message["type"] == "broadcast", message
            received.append(message)
        return received

    async def until_broadcast(self, predicate: Any) -> list[dict[str, Any]]:
        """Broadcasts up to and including the first that matches `predicate` (a sentinel)."""
        received = []
        while True:
            message = await self.receive()
            assert message["type"] == "broadcast", message
            received.append(message)
            if predicate(message):
                return received


@asynccontextmanager
async def realtime_client(url: str, **options: Any) -> AsyncIterator[RealtimeClient]:
    async with connect(url, open_timeout=RECEIVE_TIMEOUT, **options) as connection:
        yield RealtimeClient(connection)
