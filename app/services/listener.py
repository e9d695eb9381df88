"""The LISTEN connection: one autocommit connection that turns NOTIFYs into wake-ups."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import psycopg
from psycopg import sql

from app.services.sessions import KEEPALIVES

log = logging.getLogger(__name__)


class ChangeListener:
    """Listens on the notify channel and calls `on_wake` for every notification and every (re)connect.

    A reconnect wakes the feed too, because changes may have committed while nobody listened; the feed
    reads them from the change log. Reconnects back off exponentially with jitter, so a fleet of
    instances does not hammer a database that is coming back up.
    """

    def __init__(self, conninfo: str, channel: str, on_wake: Callable[[], None]) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._on_wake = on_wake
        self.connected = False
        self.connects = 0  # successful LISTENs; all but the first are reconnects

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    application_name="fluxbase-realtime-listener",
                    **KEEPALIVES,
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.connected = True
                    self.connects += 1
                    failures = 0
                    log.info("listener_connected channel=%s", self._channel)
                    self._on_wake()
                    async for _ in conn.notifies():
                        self._on_wake()
            except psycopg.Error as error:
                failures += 1
                delay = min(10.0, 0.05 * 2**failures) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
                log.warning(
                    "listener_disconnected error=%r retry_in=%.2fs attempt=%d",
                    type(error).__name__,
                    delay,
                    failures,
                )
                self.connected = False
                await asyncio.sleep(delay)
            finally:
                self.connected = False
