"""`python -m bench.wakeup`: what one change feed wake-up costs the database, piece by piece.

A wake-up is on every change's way to its subscribers (docs/benchmarks.md: what bounds latency). On a
scratch database with the current migrations, one realtime table, and no service running, this commits
one single-row transaction at a time and then times, from this process, the feed's own statements:

- pass + read: the sequencer pass and the log read in one statement, as the feed sends them
  (fluxbase_realtime.sequence_and_read);
- the same as two statements in one psycopg pipeline, as the feed sent them before;
- the same on a pooled connection (taken and given back each time), as the feed did before that;
- the same with the pass committed without waiting for its WAL flush (what durability costs; the
  service never does this);
- a pass with nothing new to number, and `SELECT 1` (the round trip alone), straight after the other
  steps and after 10 ms of idleness (what waking an idle machine adds to a round trip).

Medians and 90th percentiles over `--rounds` wake-ups; the first 10% are dropped as warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from app.services.changes import FEED_SESSION_OPTIONS
from bench import harness
from bench.suite import DEFAULT_ADMIN_URL

SEQUENCE = "SELECT fluxbase_realtime.sequence_commits()"
READ = "SELECT * FROM fluxbase_realtime.changes_after(%s, 500, 16777216)"
WAKE = "SELECT * FROM fluxbase_realtime.sequence_and_read(%s, 500, 16777216)"
IDLE = 0.01
TABLE = "bench_wakeup"


async def _wake(conn: psycopg.AsyncConnection[Any], after: int) -> int:
    """As the feed wakes up: the pass and the first read in one statement."""
    rows = await (await conn.execute(WAKE, (after,), prepare=True)).fetchall()
    return int(rows[0][0])


async def _pipeline(conn: psycopg.AsyncConnection[Any], after: int) -> int:
    """As the feed woke up before migration 0012 (sequence_and_read, sql/sequencer.sql): the pass and the
    read as two statements in one pipeline."""
    async with conn.pipeline():
        sequenced = await conn.execute(SEQUENCE)
        read = await conn.execute(READ, (after,), prepare=True)
        row = await sequenced.fetchone()
        await read.fetchall()
    return int(row[0]) if row else after


async def measure(dsn: str, rounds: int) -> dict[str, list[float]]:
    writer = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    own = await psycopg.AsyncConnection.connect(dsn, autocommit=True, options=FEED_SESSION_OPTIONS)
    careless = await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, options=f"{FEED_SESSION_OPTIONS} -c synchronous_commit=off"
    )
    pool = AsyncConnectionPool(dsn, min_size=2, max_size=4, kwargs={"autocommit": True}, open=False)
    await pool.open(wait=True)
    head = await _pipeline(own, 0)
    timings: dict[str, list[float]] = {}

    async def timed(name: str, step: Callable[[], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        result = await step()
        timings.setdefault(name, []).append(time.perf_counter() - started)
        return result

    async def pooled(after: int) -> int:
        async with pool.connection() as conn:
            return await _wake(conn, after)

    async def after_idling() -> Any:
        await asyncio.sleep(IDLE)
        started = time.perf_counter()
        await own.execute("SELECT 1")
        timings.setdefault("round trip after 10 ms idle (SELECT 1)", []).append(time.perf_counter() - started)

    insert = sql.SQL("INSERT INTO {} (sent_at, payload) VALUES (0, 'x')").format(sql.Identifier(TABLE))
    try:
        for index in range(rounds):
            await timed("writer's single-row commit", lambda: writer.execute(insert))
            kind = index % 4
            if kind == 0:
                head = await timed("pass + read, one statement (the feed)", lambda h=head: _wake(own, h))
            elif kind == 1:
                head = await timed("pass + read, pipelined (before)", lambda h=head: _pipeline(own, h))
            elif kind == 2:
                head = await timed("pass + read, pooled connection", lambda h=head: pooled(h))
            else:
                head = await timed(
                    "pass + read, pass not flushed (not durable)",
                    lambda h=head: _wake(careless, h),
                )
            await timed("pass with nothing new", lambda: own.execute(SEQUENCE))
            await timed("round trip (SELECT 1)", lambda: own.execute("SELECT 1"))
            await after_idling()
    finally:
        await pool.close()
        await own.close()
        await careless.close()
        await writer.close()
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeup", description=__doc__)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--rounds", type=int, default=900)
    args = parser.parse_args(argv)
    with harness.scratch_database(args.admin_url) as dsn:
        from app import migrations

        migrations.upgrade(dsn)
        harness.create_table(dsn, TABLE)
        timings = asyncio.run(measure(dsn, args.rounds))
    print(f"{'step':48s} {'median':>9s} {'p90':>9s}")
    for name, values in timings.items():
        kept = sorted(values[len(values) // 10 :])
        p90 = kept[int(len(kept) * 0.9)]
        print(f"{name:48s} {statistics.median(kept) * 1e6:7.0f} us {p90 * 1e6:7.0f} us")


if __name__ == "__main__":
    main()
