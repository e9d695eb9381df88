"""Scenario 8, row filters (issue 10's "Cost"): every connection subscribes with its own filter.

Equality: each connection filters on its own user, `owner=eq.<uuid>`, and the writer commits single-row
inserts at 500/s spread over the users in turn; each change is for its owner's connection only (any row
that reaches another connection is counted as leaked). Measured with 10,000 connections and with 100:
the service routes equality filters through an index (value → filters), so the server's CPU per change
should not grow with the number of filtered subscribers. Ranges: 1,000 connections, each with its own
range `bucket=gte.<10i>,bucket=lt.<10i+10>` (evaluated by PostgreSQL, one query per batch for all of
them); each row falls in one connection's range.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bench import measure
from bench.measure import Bench
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target, settle

EQUALITY_TABLE = "bench_filter_users"
RANGE_TABLE = "bench_filter_ranges"


@dataclass(frozen=True)
class Params:
    many: int  # connections, one user each
    few: int
    ranges: int
    rate: float  # changes/s
    duration: float
    processes: int = 4
    drain_timeout: float = 20.0


SIZES: dict[Size, Params] = {
    "quick": Params(many=2_000, few=100, ranges=300, rate=500, duration=2.0),
    "full": Params(many=10_000, few=100, ranges=1_000, rate=500, duration=6.0),
}


def create_tables(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, owner in ((EQUALITY_TABLE, "uuid"), (RANGE_TABLE, "integer")):
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id bigserial PRIMARY KEY, owner {} NOT NULL, "
                    "sent_at double precision, payload text)"
                ).format(sql.Identifier(name), sql.SQL(owner))
            )
            conn.execute("SELECT enable_realtime('public', %s)", (name,))


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    create_tables(bench.dsn)
    result = RunResult()
    users = tuple(str(uuid.uuid4()) for _ in range(params.many))
    for label, count in (("few.", params.few), ("many.", params.many)):
        owners = users[:count]
        filters = {tag: f"owner=eq.{user}" for tag, user in enumerate(owners)}
        result.add(label, _step(bench, EQUALITY_TABLE, owners, filters, params, result, label))
        settle(1.0)
    buckets = tuple(str(10 * i + 5) for i in range(params.ranges))
    filters = {i: f"owner=gte.{10 * i},owner=lt.{10 * i + 10}" for i in range(params.ranges)}
    result.add("ranges.", _step(bench, RANGE_TABLE, buckets, filters, params, result, "ranges."))
    few, many = result.figures.get("few.cpu_us_per_change"), result.figures.get("many.cpu_us_per_change")
    if few and many:
        result.figures["cpu_ratio"] = many / few
    return result


def _step(
    bench: Bench,
    table: str,
    owners: tuple[str, ...],
    filters: dict[int, str],
    params: Params,
    result: RunResult,
    label: str,
) -> dict[str, Any]:
    channel = f"table:public.{table}"
    opened = bench.pool.connect(
        bench.server.ws_url,
        channel,
        len(owners),
        params.processes,
        [(t, None) for t in filters],
        filters=filters,
    )
    try:
        # Warm-up: prepared statements, caches; its figures are thrown away.
        _paced(bench, table, owners, params, seconds=0.5)
        cpu_before = sum(bench.server.cpu_seconds())
        step = _paced(bench, table, owners, params, seconds=params.duration)
        cpu = sum(bench.server.cpu_seconds()) - cpu_before
    finally:
        bench.pool.close(abort=True)
    changes = step.figures["changes"]
    result.cdfs[f"filters: {len(owners):,} {label.rstrip('.')} filters, {params.rate:g} changes/s"] = step.cdf
    kept = {k: v for k, v in step.figures.items() if k != "changes_per_s"}
    return {
        **kept,
        "connect_seconds": opened.seconds,
        "cpu_us_per_change": 1e6 * cpu / changes if changes else None,
    }


def _paced(bench: Bench, table: str, owners: tuple[str, ...], params: Params, *, seconds: float) -> Any:
    return measure.paced(
        bench,
        table,
        rate=params.rate,
        duration=seconds,
        payload_bytes=64,
        drain_timeout=params.drain_timeout,
        owners=owners,
    )


def rows(size: Size) -> list[Row]:
    params = SIZES[size]
    lines: list[Row] = []
    for label, count in (("few.", params.few), ("many.", params.many)):
        title = f"filters: {count:,} connections, each owner=eq.<own id>, {params.rate:g} changes/s"
        target = Target("<=", 25, "≤ 25 ms") if label == "many." else None
        lines += [
            Row(title, "changes/s (committed)", label + "writer_rate", "{:,.0f}"),
            Row("", "missing deliveries", label + "missing", "{:,.0f}"),
            Row("", "leaked (to another user)", label + "leaked", "{:,.0f}"),
            Row("", "p50 commit → client", label + "p50_ms", "{:.1f}", "ms"),
            Row("", "p99 commit → client", label + "p99_ms", "{:.1f}", "ms", target),
            Row("", "server CPU per change", label + "cpu_us_per_change", "{:,.0f}", "µs"),
        ]
    lines.append(
        Row(
            "",
            f"server CPU per change, {params.many:,} over {params.few} connections",
            "cpu_ratio",
            "{:.2f}",
            "x",
            Target("<=", 2.0, "≤ 2x"),
        )
    )
    title = f"filters: {params.ranges:,} connections, each its own range, {params.rate:g} changes/s"
    lines += [
        Row(title, "deliveries/s", "ranges.deliveries_per_s", "{:,.0f}"),
        Row("", "missing deliveries", "ranges.missing", "{:,.0f}"),
        Row("", "leaked", "ranges.leaked", "{:,.0f}"),
        Row("", "p50", "ranges.p50_ms", "{:.1f}", "ms"),
        Row("", "p99", "ranges.p99_ms", "{:.1f}", "ms"),
        Row("", "server CPU per change", "ranges.cpu_us_per_change", "{:,.0f}", "µs"),
    ]
    return lines


def load(size: Size) -> list[tuple[str, str]]:
    params = SIZES[size]
    return [
        (f"filters: {params.few} eq filters", "few."),
        (f"filters: {params.many:,} eq filters", "many."),
        (f"filters: {params.ranges:,} range filters", "ranges."),
    ]


SCENARIO = Scenario(name="filters", measure=measure_run, rows=rows, load=load, params=lambda s: SIZES[s])
