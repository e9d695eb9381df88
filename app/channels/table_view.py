"""A table subscribe's options checked against the table, turned into the subscription's view."""

from __future__ import annotations

import logging
import time
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from app.filters.evaluate import ColumnType, prepare_filter, table_columns
from app.filters.parse import FilterError, FilterLimits, parse_filter
from app.protocol import TableChannel, TableOptions
from app.services.audience import Audience
from app.services.rls import TableAccess
from app.services.views import PLAIN, View

log = logging.getLogger(__name__)

# How long a table's columns are taken as known: subscribes with filters come in bursts (10,000 clients
# reconnecting), and a filter is checked by PostgreSQL itself whatever this says.
COLUMNS_TTL = 5.0


class TableColumns:
    """The columns (and their types) of the tables subscribed with options, kept for a few seconds."""

    def __init__(self, ttl: float = COLUMNS_TTL) -> None:
        self._ttl = ttl
        self._known: dict[tuple[str, str], tuple[float, dict[str, ColumnType]]] = {}

    async def of(self, conn: AsyncConnection[Any], channel: TableChannel) -> dict[str, ColumnType]:
        key = (channel.schema, channel.table)
        now = time.monotonic()
        known = self._known.get(key)
        if known is not None and known[0] > now:
            return known[1]
        columns = await table_columns(conn, channel.schema, channel.table)
        if len(self._known) > 1024:
            self._known.clear()
        self._known[key] = (now + self._ttl, columns)
        return columns


async def view_or_refusal(
    pool: AsyncConnectionPool,
    known: TableColumns,
    channel: TableChannel,
    options: TableOptions,
    audience: Audience,
    access: TableAccess | None,
    limits: FilterLimits,
) -> View | str:
    """The view the options ask for, or the sentence that refuses them (an unknown column, a filter
    PostgreSQL rejects, a column the role may not read)."""
    if options.filter is None and options.events is None and options.columns is None:
        return PLAIN if options.subscription is None else View(subscription=options.subscription)
    table = f"{channel.schema}.{channel.table}"
    # Under row-level security a filter or a column selection must not reach past the role's columns:
    # a filter on a hidden column would tell its values.
    restricted = (
        access is not None
        and access.rls_enabled
        and not access.bypass
        and not audience.bypasses_rls
        and access.hides_columns
    )
    tree = None
    if options.filter is not None:
        try:
            tree = parse_filter(options.filter, limits)
        except FilterError as error:
            return str(error)
    try:
        async with pool.connection() as conn:
            columns = await known.of(conn, channel)
            if options.columns is not None:
                unknown = [c for c in options.columns if c not in columns]
                if unknown:
                    return f"unknown column {unknown[0]!r} in columns: table {table} has no such column"
                if restricted and access is not None:
                    hidden = [c for c in options.columns if c not in access.allowed_columns]
                    if hidden:
                        return f"column {hidden[0]!r} in columns is not visible to role {audience.role!r}"
            table_filter = None
            if tree is not None:
                table_filter = await prepare_filter(conn, channel.schema, channel.table, tree, columns)
                if restricted and access is not None:
                    hidden = sorted(table_filter.columns - access.allowed_columns)
                    if hidden:
                        return (
                            f"invalid filter: column {hidden[0]!r} is not visible to role {audience.role!r}"
                        )
    except FilterError as error:
        return str(error)
    selected = None
    if options.columns is not None:
        keys = access.key_columns if access is not None else ()
        selected = frozenset(options.columns) | frozenset(keys)
    return View(
        filter_key=table_filter.key if table_filter is not None else None,
        events=options.events,
        columns=selected,
        subscription=options.subscription,
        filter=table_filter,
    )
