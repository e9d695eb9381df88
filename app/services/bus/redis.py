"""The bus through Redis: packets are PUB/SUB messages on one channel (REALTIME_REDIS_URL).

PUB/SUB keeps nothing: a packet published while an instance is disconnected never reaches it, which the
cluster's sequence numbers and full-state syncs repair (app/services/cluster.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis import exceptions
from redis.asyncio import Redis

from app.services.bus.transport import BusUnavailable, backoff

log = logging.getLogger(__name__)

# Redis errors that mean "the link is down", as opposed to a bug.
LINK_ERRORS = (exceptions.ConnectionError, exceptions.TimeoutError, OSError)


class RedisTransport:
    name = "redis"
    max_packet_bytes: int | None = None

    def __init__(self, url: str, channel: str) -> None:
        self._url = url
        self._channel = channel
        self._connected = False
        # Separate clients: a subscribed connection can only listen.
        self._publisher = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)

    @property
    def connected(self) -> bool:
        return self._connected

    async def run(self, on_packet: Callable[[bytes], None], on_connected: Callable[[], None]) -> None:
        attempt = 0
        while True:
            client = Redis.from_url(self._url, socket_connect_timeout=2, health_check_interval=5)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._connected = True
                attempt = 0
                log.info("bus_connected transport=redis")
                on_connected()
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None and message["type"] == "message":
                        on_packet(message["data"])
            except LINK_ERRORS as error:
                log.warning("bus_disconnected transport=redis error=%s", type(error).__name__)
            finally:
                self._connected = False
                await asyncio.shield(_quietly_close(pubsub, client))
            attempt += 1
            await asyncio.sleep(backoff(attempt))

    async def send(self, packets: list[bytes]) -> None:
        try:
            if len(packets) == 1:
                await self._publisher.publish(self._channel, packets[0])
                return
            async with self._publisher.pipeline(transaction=False) as pipe:
                for packet in packets:
                    pipe.publish(self._channel, packet)
                await pipe.execute()
        except LINK_ERRORS as error:
            raise BusUnavailable(f"the Redis bus is unavailable ({type(error).__name__})") from None

    async def close(self) -> None:
        await self._publisher.aclose()


async def _quietly_close(pubsub: object, client: Redis) -> None:
    try:
        await pubsub.aclose()  # type: ignore[attr-defined]
        await client.aclose()
    except LINK_ERRORS:
        pass
