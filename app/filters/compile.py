"""Filter trees → parameterized SQL predicates over one row, with PostgreSQL's own semantics.

Every identifier is quoted (psycopg.sql.Identifier) and every value is a parameter sent untyped, so
PostgreSQL reads it exactly as it reads a literal written in a WHERE clause: as the type of the column
it is compared with (`amount > '100'` compares numerically, `name > 'b'` in the column's collation,
`at > '2026-01-01'` as a timestamptz in the session's time zone). JSON keys are parameters too; array
positions are integer literals.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from app.filters.syntax import Condition, Field, Group, Node

# Operators are named in pg_catalog, so that no operator on the search path can stand in for them.
_COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_LIKE = {"like": "~~", "ilike": "~~*"}
_IS = {"null": "NULL", "true": "TRUE", "false": "FALSE", "unknown": "UNKNOWN"}


@dataclass(frozen=True, slots=True)
class Predicate:
    """A boolean SQL expression over the row named `row` (an alias), and its parameters in order."""

    sql: sql.Composable
    params: tuple[str, ...]


def compile_filter(tree: Node, row: str) -> Predicate:
    """The predicate of a filter tree, with columns qualified by the alias `row`."""
    params: list[str] = []
    expression = _node(tree, sql.Identifier(row), params)
    return Predicate(expression, tuple(params))


def like_pattern(value: str) -> str:
    """PostgREST's `*` wildcard is LIKE's `%`."""
    return value.replace("*", "%")


def _node(node: Node, row: sql.Identifier, params: list[str]) -> sql.Composable:
    if isinstance(node, Group):
        joiner = sql.SQL(" AND " if node.kind == "and" else " OR ")
        inner = sql.SQL("({})").format(joiner.join(_node(item, row, params) for item in node.items))
        return sql.SQL("(NOT {})").format(inner) if node.negated else inner
    expression = _condition(node, row, params)
    return sql.SQL("(NOT {})").format(expression) if node.negated else expression


def _condition(condition: Condition, row: sql.Identifier, params: list[str]) -> sql.Composable:
    op = condition.op
    if op == "in":
        assert isinstance(condition.value, tuple)
        # `x IN (a, b)` is `x = a OR x = b`, NULLs included; spelled out to name the operator. The field
        # is written once per value, with its JSON keys' parameters each time, in placeholder order.
        tests: list[sql.Composable] = []
        for value in condition.value:
            tests.append(_operator(_field(condition.field, row, params), "="))
            params.append(value)
        return sql.SQL("({})").format(sql.SQL(" OR ").join(tests))
    field = _field(condition.field, row, params)
    if op == "is":
        assert isinstance(condition.value, str)
        return sql.SQL("({} IS {})").format(field, sql.SQL(_IS[condition.value]))
    assert isinstance(condition.value, str)
    if op in ("like", "ilike"):
        params.append(like_pattern(condition.value))
        return _operator(field, _LIKE[op])
    params.append(condition.value)
    return _operator(field, _COMPARISONS[op])


def _operator(left: sql.Composable, name: str, right: sql.Composable | None = None) -> sql.Composable:
    return sql.SQL("({} OPERATOR(pg_catalog.{}) {})").format(
        left, sql.SQL(name), right if right is not None else sql.Placeholder()
    )


def _field(field: Field, row: sql.Identifier, params: list[str]) -> sql.Composable:
    expression: sql.Composable = sql.SQL("{}.{}").format(row, sql.Identifier(field.column))
    for position, step in enumerate(field.path):
        arrow = "->>" if field.as_text and position == len(field.path) - 1 else "->"
        if isinstance(step, int):
            key: sql.Composable = sql.SQL("{}::pg_catalog.int4").format(sql.Literal(step))
        else:
            params.append(step)
            # A key is always text: `->` with an untyped parameter would be ambiguous (text or integer).
            key = sql.SQL("{}::pg_catalog.text").format(sql.Placeholder())
        expression = _operator(expression, arrow, key)
    return expression
