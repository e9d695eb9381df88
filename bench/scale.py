"""What the 100,000-connection scenarios share: the server's Prometheus counters, the database's load,
one timed row, and the figures of the client fleet's processes."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from bench.fleet import Status, Verdict
from bench.harness import Server

PREFIX = "fluxbase_realtime_"
# pg_stat_database columns that say how hard the database worked (queries, rows read, blocks touched).
DB_COUNTERS = ("xact_commit", "tup_returned", "tup_fetched", "blks_hit", "blks_read")


def scrape(server: Server, timeout: float = 30.0) -> dict[str, float]:
    """The server's /metrics samples without the prefix, e.g. `replays_total`,
    `messages_sent_total{type="heartbeat"}`; empty when it does not answer in time (an overloaded
    server's HTTP waits in the same accept queue as the storm)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError:  # URLError and timeouts included
        return {}
    # With REALTIME_WORKERS each worker's samples carry a `worker` label: the instance's are their sum.
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(PREFIX):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()) if k != "worker")
            name = sample.name[len(PREFIX) :] + (f"{{{labels}}}" if labels else "")
            samples[name] = samples.get(name, 0.0) + sample.value
    return samples


def database_counters(dsn: str) -> dict[str, float]:
    """This database's pg_stat_database counters now, and the wall clock (`at`)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")  # this session's own counts, not deferred
        conn.execute("SELECT pg_stat_clear_snapshot()")
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in DB_COUNTERS)
        row = conn.execute(
            sql.SQL("SELECT {} FROM pg_stat_database WHERE datname = current_database()").format(columns)
        ).fetchone()
    assert row is not None
    return {"at": time.monotonic(), **{c: float(v) for c, v in zip(DB_COUNTERS, row, strict=True)}}


def database_load(before: dict[str, float], after: dict[str, float], prefix: str) -> dict[str, float]:
    """Each counter's growth over a span, in total and per second."""
    seconds = max(1e-6, after["at"] - before["at"])
    figures: dict[str, float] = {}
    for name in DB_COUNTERS:
        grown = after[name] - before[name]
        figures[f"{prefix}{name}"] = grown
        figures[f"{prefix}{name}_per_s"] = grown / seconds
    return figures


Database = str | psycopg.Connection[Any]  # a DSN to connect to, or an autocommit connection to use


@contextlib.contextmanager
def _connected(database: Database) -> Iterator[psycopg.Connection[Any]]:
    if isinstance(database, str):
        with psycopg.connect(database, autocommit=True) as conn:
            yield conn
    else:
        yield database


def insert_row(database: Database, table: str) -> tuple[int, float]:
    """One committed row: its id, and the wall-clock time just before its INSERT (in autocommit: its
    transaction) was sent. Latencies from there include the commit itself, but cannot come out negative
    when this process is descheduled between the COMMIT's return and its clock reading, as happens on
    a saturated machine (by tens of ms). A connection opened before a storm (`database`) is sure to be
    there after it: the instances' pools may have taken every slot the database has meanwhile."""
    with _connected(database) as conn:
        statement = sql.SQL("INSERT INTO {} (sent_at, payload) VALUES (%s, 'sentinel') RETURNING id").format(
            sql.Identifier(table)
        )
        conn.execute("SELECT 1")  # the connection is warm: the span timed is the statement's alone
        sent_at = time.time()
        row = conn.execute(statement, (sent_at,)).fetchone()
    assert row is not None
    return int(row[0]), sent_at


def log_rows(database: Database, table: str) -> tuple[int, int, int, int]:
    """(first id, last id, count, sum of ids) of the table's rows: the log every client is judged by."""
    with _connected(database) as conn:
        row = conn.execute(
            sql.SQL("SELECT min(id), max(id), count(*), sum(id) FROM {}").format(sql.Identifier(table))
        ).fetchone()
    assert row is not None and row[0] is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def client_figures(status: Sequence[Status]) -> dict[str, float]:
    """Memory and effort of the fleet's processes."""
    clients = max(1, sum(s.clients for s in status))
    return {
        "client_processes": len(status),
        "client_rss_mb": sum(s.rss_bytes for s in status) / 2**20,
        "client_kb_per_connection": sum(s.rss_bytes for s in status) / clients / 1024,
        "client_attempts": sum(s.attempts for s in status),
        "client_failures": sum(s.failures for s in status),
        "client_refusals": sum(s.refusals for s in status),
    }


def merged(verdicts: Sequence[Verdict]) -> dict[str, float]:
    """The fleet's verdict counts summed."""
    return {
        name: float(sum(getattr(v, name) for v in verdicts))
        for name in ("exact", "short", "stranded", "disorder", "wrong", "reconnects")
    }


def joined(verdicts: Sequence[Verdict], name: str) -> array[float]:
    out = array("d")
    for verdict in verdicts:
        out.extend(getattr(verdict, name))
    return out


def curve(values: Sequence[float], points: int = 200) -> list[tuple[float, int]]:
    """(value, how many are at or below it) at `points` even ranks of `values`: enough to draw a
    cumulative curve of 100,000 without keeping them."""
    ordered = sorted(values)
    if not ordered:
        return []
    ranks = sorted({max(1, round(len(ordered) * i / points)) for i in range(1, points + 1)})
    return [(ordered[rank - 1], rank) for rank in ranks]


class CounterSampler:
    """The database's counters once per `interval`, in a thread, from start until stopped: the load
    over a span whose end is only known afterwards (when the last client was live again)."""

    def __init__(self, dsn: str, interval: float = 0.5) -> None:
        self.samples: list[dict[str, float]] = []
        self._dsn, self._interval = dsn, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="db-counters", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psycopg.Error):
                self.samples.append(database_counters(self._dsn))
            self._stop.wait(self._interval)

    def stop(self) -> list[dict[str, float]]:
        self._stop.set()
        self._thread.join()
        return self.samples

    def at(self, moment: float) -> dict[str, float]:
        """The first sample taken at or after `moment` (time.monotonic), else the last."""
        return next((s for s in self.samples if s["at"] >= moment), self.samples[-1])
