"""Which of a table's filters each record of a batch matches: equality routes first, PostgreSQL for
the rest, one query per batch whatever the number of filters."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection

from app.filters.evaluate import BatchStatement, TableFilter, batch_statements, evaluate

log = logging.getLogger(__name__)


class FilterSet:
    """The filters in use on one table, each counted by its users, with an index from each routed
    column's value to the filters routed on it."""

    __slots__ = ("_filters", "_routes", "_statements", "_unrouted", "_uses")

    def __init__(self) -> None:
        self._filters: dict[str, TableFilter] = {}
        self._uses: dict[str, int] = {}
        self._routes: dict[str, dict[Any, set[str]]] = {}
        self._unrouted: set[str] = set()
        # Evaluation queries by the filters they evaluate, kept while the set does not change.
        self._statements: dict[tuple[str, ...], list[BatchStatement]] = {}

    def __len__(self) -> int:
        return len(self._filters)

    def __contains__(self, key: object) -> bool:
        return key in self._filters

    def add(self, table_filter: TableFilter) -> None:
        key = table_filter.key
        self._statements.clear()
        self._uses[key] = self._uses.get(key, 0) + 1
        if key in self._filters:
            return
        self._filters[key] = table_filter
        route = table_filter.route
        if route is None:
            self._unrouted.add(key)
        else:
            self._routes.setdefault(route.column, {}).setdefault(route.value, set()).add(key)

    def discard(self, key: str) -> None:
        self._statements.clear()
        uses = self._uses.get(key, 0) - 1
        if uses > 0:
            self._uses[key] = uses
            return
        self._uses.pop(key, None)
        table_filter = self._filters.pop(key, None)
        if table_filter is None:
            return
        route = table_filter.route
        if route is None:
            self._unrouted.discard(key)
            return
        by_value = self._routes[route.column]
        value = route.value
        by_value[value].discard(key)
        if not by_value[value]:
            del by_value[value]
            if not by_value:
                del self._routes[route.column]

    def candidates(self, record: str) -> tuple[set[str], set[str]]:
        """(filters the record matches for certain, filters PostgreSQL must check for it)."""
        decided: set[str] = set()
        to_check = set(self._unrouted)
        if self._routes:
            row = orjson.loads(record)
            for column, by_value in self._routes.items():
                value = row.get(column)
                if value is None or isinstance(value, dict | list | float):
                    continue  # NULL equals nothing; routed types never render as objects or floats
                for key in by_value.get(value, ()):
                    (decided if self._filters[key].route.decides else to_check).add(key)  # type: ignore[union-attr]
        return decided, to_check

    async def match(
        self, conn: AsyncConnection[Any], schema: str, table: str, records: Sequence[str | None]
    ) -> list[frozenset[str]]:
        """For each record (None: the change has no such record), the keys of the filters it matches."""
        matched: list[set[str]] = []
        pending: dict[str, list[int]] = {}  # filter key → positions of records to check it on
        for position, record in enumerate(records):
            if record is None:
                matched.append(set())
                continue
            decided, to_check = self.candidates(record)
            matched.append(decided)
            for key in to_check:
                pending.setdefault(key, []).append(position)
        if pending:
            keys = sorted(pending)  # one order, so that the same filters make the same statement
            positions = sorted({p for ps in pending.values() for p in ps})
            batch = [records[p] or "" for p in positions]
            for key, results in zip(
                keys, await self._evaluate(conn, schema, table, keys, batch), strict=True
            ):
                for position, hit in zip(positions, results, strict=True):
                    if hit:
                        matched[position].add(key)
        return [frozenset(m) for m in matched]

    async def _evaluate(
        self, conn: AsyncConnection[Any], schema: str, table: str, keys: list[str], records: list[str]
    ) -> list[list[bool]]:
        """Per filter, per record: a match. All filters in one query; should PostgreSQL refuse a value
        while evaluating (it validated each filter at subscribe, so this is not expected), filter by
        filter, and a filter that fails matches nothing in this batch."""
        predicates = [self._filters[k].predicate for k in keys]
        try:
            statements = self._statements.get(tuple(keys))
            if statements is None:
                if len(self._statements) > 64:
                    self._statements.clear()
                statements = self._statements[tuple(keys)] = batch_statements(conn, schema, table, predicates)
            by_record = await evaluate(conn, schema, table, predicates, records, statements)
            return [list(column) for column in zip(*by_record, strict=True)]
        except psycopg.Error as error:
            if conn.closed or (error.sqlstate or "")[:2] not in ("0A", "22", "42"):
                raise
            log.warning("filter_evaluation_failed table=%s.%s error=%s", schema, table, error.sqlstate)
        per_filter: list[list[bool]] = []
        for predicate in predicates:
            try:
                per_filter.append(
                    [row[0] for row in await evaluate(conn, schema, table, [predicate], records)]
                )
            except psycopg.Error as error:
                if conn.closed or (error.sqlstate or "")[:2] not in ("0A", "22", "42"):
                    raise
                per_filter.append([False] * len(records))
        return per_filter
