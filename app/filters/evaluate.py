"""Filters bound to a table, checked by PostgreSQL at subscribe, and evaluated over batches of records.

A filter is validated by PostgreSQL itself when it is prepared (unknown columns, values that do not
parse as their column's type, operators a type lacks: the database's own messages). Evaluation takes a
batch's records (JSON text, as the change log holds them) and answers, for each, which filters it
matches: the records are turned back into rows of the table's type with `jsonb_populate_record`, as
the row-level security check does, and every distinct filter is evaluated over the batch in one query.

Equality on one column, the common case (`user_id=eq.42`, one per subscriber), never reaches that
query: its value is normalized by PostgreSQL at subscribe (`to_jsonb` of the value read as the column's
type) and routed through an index from value to filters, so a change costs the same with 10,000 such
filters as with 10. Only types whose equality is exactly equality of that representation are routed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, sql

from app.filters.compile import Predicate, compile_filter
from app.filters.parse import FilterError
from app.filters.syntax import Condition, Group, conditions, render

# Types whose `=` holds exactly when their to_jsonb values are equal (text only under a deterministic
# collation). Not numeric (1.0 = 1.00), timestamps (rendered in the writer's time zone), bpchar (trailing
# blanks), floats (-0 = 0), nor anything else: those take the general path.
EXACT_TYPES = frozenset({"smallint", "integer", "bigint", "boolean", "uuid", "text", "character varying"})
COLLATED_TYPES = frozenset({"text", "character varying"})
# psycopg sends at most 65535 parameters per statement; a batch's filters are split below that.
MAX_PARAMS = 30_000

COLUMNS = """
SELECT a.attname::text, a.atttypid::regtype::text, coalesce(c.collisdeterministic, true)
FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation
WHERE a.attrelid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, %s::text))
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass(frozen=True, slots=True)
class Route:
    """An equality condition that decides (or pre-selects) a filter's rows: `column` = `value`, where
    `value` is the condition's value as the record's JSON holds it."""

    column: str
    value: Any
    decides: bool  # the filter is this one condition: a hit is a match, no query needed


@dataclass(frozen=True, slots=True)
class TableFilter:
    """A filter validated against one table. `key` is its canonical text: identical filters (however
    spelled) share one evaluation."""

    key: str
    tree: Group
    predicate: Predicate
    route: Route | None
    columns: frozenset[str]  # the columns it reads


@dataclass(frozen=True, slots=True)
class ColumnType:
    name: str
    type: str
    deterministic: bool

    @property
    def routable(self) -> bool:
        return self.type in EXACT_TYPES and (self.deterministic or self.type not in COLLATED_TYPES)


async def table_columns(conn: AsyncConnection[Any], schema: str, table: str) -> dict[str, ColumnType]:
    """The table's columns in order (empty when there is no such table)."""
    rows = await (await conn.execute(COLUMNS, (schema, table))).fetchall()
    return {name: ColumnType(name, kind, deterministic) for name, kind, deterministic in rows}


async def prepare_filter(
    conn: AsyncConnection[Any], schema: str, table: str, tree: Group, columns: dict[str, ColumnType]
) -> TableFilter:
    """Bind a parsed filter to a table: PostgreSQL validates it; FilterError says why it is refused."""
    predicate = compile_filter(tree, table)
    try:
        route = await _route(conn, schema, table, tree, columns)
        if route is None or not route.decides:
            # A row of NULLs: the values bind (a deciding route's query has just read its one value).
            await evaluate(conn, schema, table, [predicate], ["{}"])
            await _probe_like(conn, schema, table, tree, columns)
    except psycopg.Error as error:
        # 22: a value PostgreSQL cannot read as its type; 42: an unknown column or operator; 0A: what the
        # type does not support (LIKE under a nondeterministic collation). Anything
        # else (the database is unavailable) is not the filter's fault.
        if (error.sqlstate or "")[:2] not in ("0A", "22", "42"):
            raise
        raise FilterError(f"invalid filter: {error.diag.message_primary or error}") from None
    used = frozenset(c.field.column for c in conditions(tree))
    return TableFilter(render(tree), tree, predicate, route, used)


async def _probe_like(
    conn: AsyncConnection[Any], schema: str, table: str, tree: Group, columns: dict[str, ColumnType]
) -> None:
    """PostgreSQL refuses LIKE under a nondeterministic collation only when it runs it on a value, which
    a row of NULLs (or an OR already true) skips: each such condition runs alone, on a value."""
    for condition in conditions(tree):
        column = columns.get(condition.field.column)
        if condition.op not in ("like", "ilike") or condition.field.path or column is None:
            continue
        if column.type in COLLATED_TYPES and not column.deterministic:
            alone = compile_filter(Group("and", (condition,)), table)
            await evaluate(conn, schema, table, [alone], [orjson.dumps({column.name: ""}).decode()])


async def _route(
    conn: AsyncConnection[Any], schema: str, table: str, tree: Group, columns: dict[str, ColumnType]
) -> Route | None:
    for item in tree.items:
        if not isinstance(item, Condition) or item.op != "eq" or item.negated or item.field.path:
            continue
        column = columns.get(item.field.column)
        if column is None or not column.routable:
            continue
        assert isinstance(item.value, str)
        # The value read as the column's type (CASE resolves the parameter as `=` does), as to_jsonb
        # renders it: what the record of a matching row holds. PostgreSQL refuses a value that does not
        # parse as the type here, so for a filter of this one condition this is the whole check.
        query = sql.SQL(
            "SELECT pg_catalog.to_jsonb(CASE WHEN false THEN {row}.{column} ELSE %s END)::pg_catalog.text "
            "FROM pg_catalog.jsonb_populate_record(NULL::{table}, '{{}}') AS {row}"
        ).format(
            row=sql.Identifier(table), column=sql.Identifier(column.name), table=sql.Identifier(schema, table)
        )
        row = await (await conn.execute(query, (item.value,))).fetchone()
        assert row is not None
        return Route(column.name, orjson.loads(row[0]), decides=len(tree.items) == 1)
    return None


@dataclass(frozen=True, slots=True)
class BatchStatement:
    """One evaluation query for a list of predicates (its text, and the predicates' parameters); the
    records are its last parameter. Built once for a set of filters and kept while it does not change."""

    query: bytes
    params: tuple[object, ...]
    width: int  # predicates evaluated


def batch_statements(
    conn: AsyncConnection[Any], schema: str, table: str, predicates: Sequence[Predicate]
) -> list[BatchStatement]:
    statements = []
    for chunk in _chunks(predicates):
        array = sql.SQL(", ").join(sql.SQL("coalesce({}, false)").format(p.sql) for p in chunk)
        # The row alias is the table's own name, so that PostgreSQL's messages name the table.
        query = sql.SQL(
            "SELECT (SELECT ARRAY[{array}] FROM pg_catalog.jsonb_populate_record(NULL::{table}, batch.rec) "
            "AS {row}) FROM pg_catalog.unnest(%s::pg_catalog.jsonb[]) WITH ORDINALITY AS batch(rec, n) "
            "ORDER BY batch.n"
        ).format(array=array, table=sql.Identifier(schema, table), row=sql.Identifier(table))
        params = tuple(value for p in chunk for value in p.params)
        statements.append(BatchStatement(query.as_bytes(conn), params, len(chunk)))
    return statements


async def evaluate(
    conn: AsyncConnection[Any],
    schema: str,
    table: str,
    predicates: Sequence[Predicate],
    records: Sequence[str],
    statements: list[BatchStatement] | None = None,
) -> list[list[bool]]:
    """For each record (JSON text of a row of the table), whether each predicate holds (NULL: no).
    With `statements` (batch_statements of the same predicates, kept by the caller), they are run as
    prepared statements: the same filters evaluated batch after batch are planned once."""
    results: list[list[bool]] = [[] for _ in records]
    if not records:
        return results
    prepare = statements is not None
    for statement in (
        statements if statements is not None else batch_statements(conn, schema, table, predicates)
    ):
        params = [*statement.params, list(records)]
        rows = await (await conn.execute(statement.query, params, prepare=prepare)).fetchall()
        for result, (matches,) in zip(results, rows, strict=True):
            result.extend(matches)
    return results


def _chunks(predicates: Sequence[Predicate]) -> Iterable[Sequence[Predicate]]:
    start, count = 0, 0
    for position, predicate in enumerate(predicates):
        if count and count + len(predicate.params) > MAX_PARAMS:
            yield predicates[start:position]
            start, count = position, 0
        count += len(predicate.params)
    if start < len(predicates):
        yield predicates[start:]
