"""`python -m bench.consumer_cpu`: what capture costs per change in each mode, in CPU time, which a busy
machine does not blur.

Wall-clock ingest and latency swing by 2-3x between identical runs when other processes hold the cores;
CPU time does not. Each run writes the same rows (500-row INSERT statements into the ingest scenario's
table, or `--rows` to a statement, each its own transaction) three ways, on one server, and reads CPU
seconds from /proc: with no realtime (`off`), through the capture trigger (`trigger`), and into a logical
slot (`logical`), the consumer then run alone (no feed, no clients) in this process until all are in the
change log. Reported per 1,000 changes: the writer's own backend in every mode, and in logical mode the
consumer (Python), its backend (the batch writer's SQL) and the walsender (pgoutput), read before they
exit. What capture costs is each mode's total less `off`'s writer. The feed's numbering and reads, the
same in both modes, are not part of it. Compare two versions by running each from its own checkout
against the same server, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
MODES = ("off", "trigger", "logical")
PEERS = """
SELECT pid, backend_type FROM pg_stat_activity
WHERE datname = current_database()
  AND (application_name = 'fluxbase-realtime-consumer' OR backend_type = 'walsender')
"""


def _ticks(pid: int) -> float:
    return sum(harness.process_cpu_seconds(pid))


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
            key = "walsender" if kind == "walsender" else "consumer backend"
            figures[key] = figures.get(key, 0.0) + _ticks(pid)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return figures


def _write(url: str, changes: int, rows: int) -> float:
    """The rows, `rows` to a statement (each its own transaction); returns the writer backend's CPU
    seconds."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        start = _ticks(row[0])
        for _ in range(changes // rows):
            conn.execute(
                "INSERT INTO bench_ingest (sent_at, payload)"
                " SELECT extract(epoch FROM now()), repeat('x', 100) FROM generate_series(1, %s)",
                (rows,),
                prepare=True,
            )
        return _ticks(row[0]) - start


def _run(admin_url: str, changes: int, rows: int, mode: str) -> dict[str, float]:
    with harness.scratch_database(admin_url) as url:
        migrations.upgrade(url)
        if mode != "logical":
            harness.create_table(url, "bench_ingest", realtime=mode == "trigger")
            return {"writer": _write(url, changes, rows)}
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT fluxbase_realtime.ensure_publication('fluxbase_realtime')")
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SLOT,))
            conn.execute("SELECT fluxbase_realtime.configure_capture('logical', 'fluxbase_realtime')")
        harness.create_table(url, "bench_ingest")
        writer = _write(url, changes, rows)
        figures = {"writer": writer, **asyncio.run(_consume(url, changes))}
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
    with tempfile.TemporaryDirectory(prefix="fluxbase-bench-") as work:
        Path(work).chmod(0o755)  # as bench/suite.py: when root, the server runs as `nobody`
        with harness.logical_cluster(Path(work)) as url:
            yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50_000, help="rows in the slot per run")
    parser.add_argument("--rows", type=int, default=500, help="rows per INSERT statement (and transaction)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--admin-url", help="a wal_level=logical server (default: a private one)")
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="measured in this order in each run"
    )
    args = parser.parse_args()
    with _server(args.admin_url) as admin_url:
        for run in range(1, args.runs + 1):
            baseline: float | None = None
            for mode in args.modes:
                figures = _run(admin_url, args.changes, args.rows, mode)
                per_1000 = {k: v * 1000 / args.changes for k, v in figures.items()}
                total = sum(per_1000.values())
                if mode == "off":
                    baseline = total
                parts = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in sorted(per_1000.items()))
                capture = ""
                if baseline is not None and mode != "off":
                    capture = f"; capture {(total - baseline) * 1000:.1f} ms"
                print(
                    f"run {run} {mode}: CPU per 1,000 changes: {parts}; total {total * 1000:.1f} ms{capture}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
