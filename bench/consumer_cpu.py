"""`python -m bench.consumer_cpu`: the logical consumer's CPU per change, which a busy machine does not blur.

Wall-clock ingest and latency swing by 2-3x between identical runs when other processes hold the cores;
CPU time does not. This runs the consumer alone (no feed, no clients) in this process against rows already
in the slot (500-row INSERT statements into the ingest scenario's table), until all are in the change log,
and reports the CPU seconds per 1,000 changes of the consumer (Python), of its writer backend (the batch
writer's SQL) and of the walsender (pgoutput), read from /proc before they exit. Compare two versions by
running each from its own checkout against the same server, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from app import migrations
from app.config import Settings
from app.main import logical_capture
from bench import harness

SLOT = "bench_consumer_cpu"
PEERS = """
SELECT pid, backend_type FROM pg_stat_activity
WHERE datname = current_database()
  AND (application_name = 'fluxbase-realtime-consumer' OR backend_type = 'walsender')
"""


def _ticks(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _consume(url: str, changes: int) -> dict[str, float]:
    settings = Settings.model_validate(
        {"database_url": url, "realtime_capture": "logical", "realtime_slot": SLOT}
    )
    capture = logical_capture(settings, url, lambda: None)
    cpu = time.process_time()
    task = asyncio.create_task(capture.run())
    while capture.changes_written < changes:  # noqa: ASYNC110 - the consumer has no event to wait on
        await asyncio.sleep(0.005)
    figures = {"consumer": time.process_time() - cpu}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for pid, kind in await (await conn.execute(PEERS)).fetchall():
            key = "walsender" if kind == "walsender" else "writer backend"
            figures[key] = figures.get(key, 0.0) + _ticks(pid)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return figures


def _run(admin_url: str, changes: int) -> dict[str, float]:
    with harness.scratch_database(admin_url) as url:
        migrations.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT fluxbase_realtime.ensure_publication('fluxbase_realtime')")
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SLOT,))
            conn.execute("SELECT fluxbase_realtime.configure_capture('logical', 'fluxbase_realtime')")
        harness.create_table(url, "bench_ingest")
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(changes // 500):
                conn.execute(
                    "INSERT INTO bench_ingest (sent_at, payload)"
                    " SELECT extract(epoch FROM now()), repeat('x', 100) FROM generate_series(1, 500)"
                )
        figures = asyncio.run(_consume(url, changes))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE slot_name = %s AND active_pid IS NOT NULL",
                (SLOT,),
            )
    return figures


@contextlib.contextmanager
def _server(admin_url: str | None) -> Iterator[str]:
    if admin_url:
        yield admin_url
        return
    with tempfile.TemporaryDirectory() as work, harness.logical_cluster(Path(work)) as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50_000, help="rows in the slot per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--admin-url", help="a wal_level=logical server (default: a private one)")
    args = parser.parse_args()
    with _server(args.admin_url) as admin_url:
        for run in range(1, args.runs + 1):
            figures = _run(admin_url, args.changes)
            per_1000 = {k: v * 1000 / args.changes for k, v in figures.items()}
            total = sum(per_1000.values())
            parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(per_1000.items()))
            print(f"run {run}: CPU per 1,000 changes: {parts}; total {total * 1000:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
