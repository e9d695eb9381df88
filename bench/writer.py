"""The writer process: single-row INSERT transactions at a steady pace, timing each commit."""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any

import psycopg
from psycopg import sql

# A small, realistic row: the frame stays well under one TCP segment.
PAYLOAD = "x" * 64


@dataclass
class WriterReport:
    """What the writer committed: row id → wall-clock time right after commit() returned."""

    ids: array[int]
    committed_at: array[float]
    elapsed: float
    late: int  # commits that started more than one interval behind schedule


def run(dsn: str, table: str, rate: float, duration: float, results: Queue[Any]) -> None:
    """Process entry point: write, then put ("writer", WriterReport) or ("error", ...) on `results`."""
    try:
        results.put(("writer", write(dsn, table, rate, duration)))
    except BaseException as error:
        results.put(("error", "writer", repr(error)))
        raise


def write(dsn: str, table: str, rate: float, duration: float) -> WriterReport:
    """Commit `rate * duration` rows, one per transaction, on an absolute schedule (no drift)."""
    insert = sql.SQL("INSERT INTO {} (sent_at, payload) VALUES (%s, %s) RETURNING id").format(
        sql.Identifier(table)
    )
    interval = 1.0 / rate
    report = WriterReport(array("q"), array("d"), 0.0, 0)
    with psycopg.connect(dsn) as conn:
        start = time.monotonic()
        for index in range(round(rate * duration)):
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -interval:
                report.late += 1
            row = conn.execute(insert, (time.time(), PAYLOAD)).fetchone()
            conn.commit()
            # Taken right after COMMIT returns: latency is measured from here to the client's receipt.
            report.committed_at.append(time.time())
            report.ids.append(row[0] if row else -1)
        report.elapsed = time.monotonic() - start
    return report
