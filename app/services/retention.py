"""Retention: the service prunes its own change log, by age and by size, in short transactions."""

from __future__ import annotations

import asyncio
import logging

from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

PRUNE = "SELECT fluxbase_realtime.prune_change_log(make_interval(secs => %s), %s, %s)"


class ChangeLogPruner:
    """Every `interval` seconds, removes changes older than `max_age` seconds or beyond the newest
    `max_rows`, whole transactions at a time and about `batch_rows` changes per transaction."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        max_age: float,
        max_rows: int | None,
        interval: float,
        batch_rows: int = 10_000,
    ) -> None:
        self._pool = pool
        self._max_age = max_age
        self._max_rows = max_rows
        self._interval = interval
        self._batch_rows = batch_rows

    async def run(self) -> None:
        while True:
            try:
                removed = await self.prune()
                if removed:
                    log.info("change_log_pruned changes=%d", removed)
            except Exception:
                log.exception("change_log_prune_failed retry_in=%.1fs", self._interval)
            await asyncio.sleep(self._interval)

    async def prune(self) -> int:
        """Prune until nothing is due; returns the number of changes removed."""
        total = 0
        while True:
            async with self._pool.connection() as conn:
                row = await (
                    await conn.execute(PRUNE, (self._max_age, self._max_rows, self._batch_rows))
                ).fetchone()
            removed = int(row[0]) if row else 0
            total += removed
            if removed == 0:
                return total
