"""The writer process: INSERTs into a benchmark table, paced or flat out, timing each commit.

Every statement runs in autocommit, so it is its own transaction and its return is the COMMIT returning:
the time taken right after it is where a change's latency starts.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any

import psycopg
from psycopg import pq, sql

from bench import workers
from bench.deliveries import WriterReport

# A small, realistic row: the frame stays well under one TCP segment.
SMALL_PAYLOAD = 64


@dataclass(frozen=True)
class Throughput:
    """Statements (each a transaction) and rows committed by `writers` connections in `elapsed` s."""

    statements: int
    rows: int
    elapsed: float

    @property
    def per_second(self) -> float:
        return self.statements / self.elapsed

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.elapsed


def payload_text(size: int) -> str:
    """`size` bytes of random ASCII: TOAST cannot compress it away, as it could a run of one letter."""
    return base64.b64encode(os.urandom(size * 3 // 4 + 3)).decode()[:size]


def insert_statement(table: str, rows: int, returning: bool) -> str:
    """One INSERT of `rows` rows (sent_at $1, payload $2): a VALUES row, or $3 rows from generate_series."""
    source = "VALUES ($1, $2)" if rows == 1 else "SELECT $1, $2 FROM generate_series(1, $3)"
    target = sql.Identifier(table).as_string()
    return f"INSERT INTO {target} (sent_at, payload) {source}{' RETURNING id' if returning else ''}"


class Session:
    """One autocommit connection and the statements prepared on it, executed through libpq directly.

    A psycopg cursor costs some 100 µs of Python per statement, which would make the client, not the
    database, the limit of a single-row writer (and dilute the on/off overhead ratio); a prepared
    statement run with `PGconn.exec_prepared` costs a few µs, close to pgbench.
    """

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self._names: dict[str, bytes] = {}

    def execute(self, query: str, params: Sequence[bytes]) -> pq.abc.PGresult:
        name = self._names.get(query)
        if name is None:
            name = f"bench_{len(self._names)}".encode()
            _check(self.conn.pgconn.prepare(name, query.encode()))
            self._names[query] = name
        return _check(self.conn.pgconn.exec_prepared(name, params))


def _check(result: pq.abc.PGresult) -> pq.abc.PGresult:
    if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        raise RuntimeError(f"statement failed: {result.error_message.decode(errors='replace')}")
    return result


def _params(payload: str, rows: int) -> list[bytes]:
    return [b"0", payload.encode()] + ([str(rows).encode()] if rows > 1 else [])


class _Writer:
    """The worker's state: sessions by (database, slot), reused across commands."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, int], Session] = {}

    def session(self, dsn: str, slot: int = 0) -> Session:
        for key in [key for key in self._sessions if key[0] != dsn]:
            # Each run has its own database: sessions on an earlier one are done with.
            self._sessions.pop(key).conn.close()
        session = self._sessions.get((dsn, slot))
        if session is None or session.conn.closed:
            session = self._sessions[(dsn, slot)] = Session(dsn)
        return session

    def paced(
        self,
        dsn: str,
        table: str,
        rate: float,
        duration: float,
        payload_bytes: int,
        owners: Sequence[str] = (),
    ) -> WriterReport:
        """Commit `rate * duration` single-row transactions on an absolute schedule (no drift). With
        `owners`, each row's `owner` column takes the next of them in turn (the report says which)."""
        session = self.session(dsn)
        insert = insert_statement(table, 1, returning=True)
        params = _params(payload_text(payload_bytes), 1)
        if owners:
            target = sql.Identifier(table).as_string()
            insert = f"INSERT INTO {target} (sent_at, payload, owner) VALUES ($1, $2, $3) RETURNING id"
            params.append(b"")
        interval = 1.0 / rate
        report = WriterReport(array("q"), array("d"))
        start = time.monotonic()
        for index in range(round(rate * duration)):
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -interval:
                report.late += 1
            if owners:
                owner = index % len(owners)
                params[2] = owners[owner].encode()
                report.owners.append(owner)
            params[0] = repr(time.time()).encode()
            result = session.execute(insert, params)
            # Taken right after COMMIT returns: latency is measured from here to the client's receipt.
            report.committed_at.append(time.time())
            report.ids.append(int(result.get_value(0, 0) or b"-1"))
        report.elapsed = time.monotonic() - start
        report.statements = len(report.ids)
        report.cpu = time.process_time()
        return report

    def flat_out(
        self, dsn: str, table: str, rows: int, duration: float, max_rows: int, per_second: float = 0.0
    ) -> WriterReport:
        """As many `rows`-row INSERT statements as fit in `duration` (at most `max_rows` rows); with
        `per_second`, at most that many statements per second, on an absolute schedule."""
        session = self.session(dsn)
        insert = insert_statement(table, rows, returning=True)
        params = _params(payload_text(SMALL_PAYLOAD), rows)
        report = WriterReport(array("q"), array("d"))
        start = time.monotonic()
        while time.monotonic() - start < duration and len(report.ids) < max_rows:
            if per_second:
                delay = start + report.statements / per_second - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -1 / per_second:
                    report.late += 1
            result = session.execute(insert, params)
            committed = time.time()
            count = result.ntuples
            report.ids.extend(int(result.get_value(i, 0) or b"-1") for i in range(count))
            report.committed_at.extend([committed] * count)
            report.statements += 1
        report.elapsed = time.monotonic() - start
        report.cpu = time.process_time()
        return report

    def throughput(self, dsn: str, table: str, rows: int, writers: int, duration: float) -> Throughput:
        """`writers` connections (threads: libpq releases the GIL while it waits on the database) each
        committing `rows`-row INSERT statements for `duration` seconds."""
        insert = insert_statement(table, rows, returning=False)
        params = _params(payload_text(SMALL_PAYLOAD), rows)
        sessions = [self.session(dsn, slot) for slot in range(writers)]
        for session in sessions:
            session.execute(insert, params)  # prepared, and the connection warm
        counts = [0] * writers
        start = time.monotonic() + 0.05  # every thread starts at the same moment
        stop = start + duration

        def write(slot: int) -> None:
            session = sessions[slot]
            time.sleep(max(0.0, start - time.monotonic()))
            while time.monotonic() < stop:
                session.execute(insert, params)
                counts[slot] += 1

        threads = [threading.Thread(target=write, args=(slot,)) for slot in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - start
        return Throughput(sum(counts), sum(counts) * rows, elapsed)

    def cpu(self) -> float:
        return time.process_time()


def run(requests: Queue[workers.Command | None], responses: Queue[Any]) -> None:
    """Worker process entry point."""
    state = _Writer()
    commands: dict[str, Callable[..., Any]] = {
        "paced": state.paced,
        "flat_out": state.flat_out,
        "throughput": state.throughput,
        "cpu": state.cpu,
    }
    workers.serve(requests, responses, commands)
