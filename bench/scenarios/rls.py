"""Scenario 7, row-level security (issue 4's "Cost"): 100 distinct users x 10 connections each on one
RLS table whose policy lets a user see only their own rows.

Every connection carries an HS256 token (sub = its user's uuid, role `authenticated`). The writer commits
single-row inserts, owned by the 100 users in turn, at a few fixed rates: each change is for its owner's
10 connections only. Besides delivery (rate, latency, missing, and any row that reached another user),
the figure that matters is the checks the service issued per change: `rls_checks` of
`GET /api/realtime/stats` over the changes committed (one check per audience per batch of changes, so
it falls as batches grow with the rate), and over the server's own `rls_changes`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import psycopg
from psycopg import sql

from bench import harness, measure
from bench.measure import Bench
from bench.scenarios.base import Row, RunResult, Scenario, Size

TABLE = "bench_rls"
POLICY = "nullif(current_setting('request.jwt.claim.sub', true), '')::uuid"


@dataclass(frozen=True)
class Params:
    users: int
    connections_per_user: int
    rates: tuple[float, ...]  # changes/s, one measurement each
    duration: float  # seconds per rate
    processes: int = 2
    drain_timeout: float = 15.0


SIZES: dict[Size, Params] = {
    "quick": Params(users=100, connections_per_user=10, rates=(200,), duration=3.0),
    "full": Params(users=100, connections_per_user=10, rates=(200, 500, 1000), duration=5.0),
}


def create_table(dsn: str) -> str:
    """The RLS benchmark table: rows visible to their owner only; returns its channel."""
    table = sql.Identifier(TABLE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigserial PRIMARY KEY, owner uuid NOT NULL, "
                "sent_at double precision, payload text)"
            ).format(table)
        )
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(table))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO authenticated").format(table))
        conn.execute(
            sql.SQL("CREATE POLICY own ON {} FOR SELECT TO authenticated USING (owner = {})").format(
                table, sql.SQL(POLICY)
            )
        )
        conn.execute("SELECT enable_realtime('public', %s)", (TABLE,))
    return f"table:public.{TABLE}"


def tokens(users: list[str], per_user: int) -> list[tuple[int, str]]:
    """(user index, token) for each connection: `per_user` connections of each user, users interleaved
    so that each client process holds some of every user's connections."""
    expires = int(time.time()) + 3600
    signed = [
        jwt.encode({"sub": user, "role": "authenticated", "exp": expires}, harness.JWT_SECRET, "HS256")
        for user in users
    ]
    return [(index, signed[index]) for _ in range(per_user) for index in range(len(users))]


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    channel = create_table(bench.dsn)
    users = tuple(str(uuid.uuid4()) for _ in range(params.users))
    total = params.users * params.connections_per_user
    result = RunResult()
    opened = bench.pool.connect(
        bench.server.ws_url,
        channel,
        total,
        params.processes,
        tokens(list(users), params.connections_per_user),
    )
    result.details["connect_seconds"] = opened.seconds
    try:
        # Warm-up: prepared statements, caches, every audience's first check.
        _paced(bench, users, params.rates[0], 0.5, params)
        for rate in params.rates:
            before = bench.server.stats()
            step = _paced(bench, users, rate, params.duration, params)
            after = bench.server.stats()
            result.add(f"r{rate:g}.", _figures(step.figures, before, after, params))
            result.cdfs[f"rls: {params.users} users x {params.connections_per_user}, {rate:g} changes/s"] = (
                step.cdf
            )
    finally:
        bench.pool.close()
    return result


def _paced(bench: Bench, users: tuple[str, ...], rate: float, duration: float, params: Params) -> Any:
    return measure.paced(
        bench,
        TABLE,
        rate=rate,
        duration=duration,
        payload_bytes=64,
        drain_timeout=params.drain_timeout,
        owners=users,
    )


def _figures(
    figures: dict[str, Any], before: dict[str, int], after: dict[str, int], params: Params
) -> dict[str, Any]:
    checks = after["rls_checks"] - before["rls_checks"]
    checked = after["rls_changes"] - before["rls_changes"]
    changes = figures["changes"]
    kept = {key: value for key, value in figures.items() if key != "changes_per_s"}
    return {
        **kept,
        "expected_per_change": figures["expected"] / changes if changes else None,
        "rls_checks": checks,
        "rls_changes": checked,
        "checks_per_change": checks / changes if changes else None,
        "checks_per_checked_change": checks / checked if checked else None,
    }


def _title(params: Params, rate: float) -> str:
    return f"rls: {params.users} users x {params.connections_per_user} conns, {rate:g} changes/s"


def rows(size: Size) -> list[Row]:
    params = SIZES[size]
    lines = []
    for rate in params.rates:
        prefix = f"r{rate:g}."
        lines += [
            Row(
                f"{_title(params, rate)}, {params.duration:g} s",
                "changes/s (committed)",
                prefix + "writer_rate",
                "{:,.0f}",
            ),
            Row("", "deliveries/s", prefix + "deliveries_per_s", "{:,.0f}"),
            Row("", "expected deliveries (10 per change)", prefix + "expected", "{:,.0f}"),
            Row("", "received deliveries", prefix + "delivered", "{:,.0f}"),
            Row("", "missing deliveries", prefix + "missing", "{:,.0f}"),
            Row("", "delivered to another user (leaked)", prefix + "leaked", "{:,.0f}"),
            Row("", "p50", prefix + "p50_ms", "{:.1f}", "ms"),
            Row("", "p99", prefix + "p99_ms", "{:.1f}", "ms"),
            Row(
                "",
                "RLS checks per change committed (one per role per batch)",
                prefix + "checks_per_change",
                "{:.2f}",
            ),
            Row(
                "",
                "RLS checks per change checked (Δrls_checks / Δrls_changes)",
                prefix + "checks_per_checked_change",
                "{:.2f}",
            ),
        ]
    return lines


def load(size: Size) -> list[tuple[str, str]]:
    params = SIZES[size]
    return [(_title(params, rate), f"r{rate:g}.") for rate in params.rates]


SCENARIO = Scenario(name="rls", measure=measure_run, rows=rows, load=load, params=lambda s: SIZES[s])
