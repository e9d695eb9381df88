"""The filter tree: what a parsed filter says, independent of how it was spelled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Operator = Literal["eq", "neq", "gt", "gte", "lt", "lte", "in", "is", "like", "ilike"]
OPERATORS: tuple[Operator, ...] = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "is", "like", "ilike")
IsValue = Literal["null", "true", "false", "unknown"]
IS_VALUES: tuple[IsValue, ...] = ("null", "true", "false", "unknown")
GroupKind = Literal["and", "or"]


@dataclass(frozen=True, slots=True)
class Field:
    """A column, or a JSON field inside one: `data->a->>b` is Field("data", ("a", "b"), as_text=True).

    Steps are object keys (str) or array positions (int); every step is `->` except the last, which is
    `->>` when `as_text` (the field's value as text rather than as jsonb).
    """

    column: str
    path: tuple[str | int, ...] = ()
    as_text: bool = False


@dataclass(frozen=True, slots=True)
class Condition:
    """`field op value`. `value` is a string for every operator but `in` (a tuple of strings) and `is`
    (one of IS_VALUES). Like patterns keep PostgREST's `*` wildcard; compile turns it into `%`."""

    field: Field
    op: Operator
    value: str | tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Group:
    """Conditions joined by AND or OR; a parsed filter is always one top-level AND group."""

    kind: GroupKind
    items: tuple[Node, ...]
    negated: bool = False


Node = Condition | Group


def conditions(node: Node) -> list[Condition]:
    """Every condition of a tree, in order."""
    if isinstance(node, Condition):
        return [node]
    return [c for item in node.items for c in conditions(item)]


def render(tree: Group) -> str:
    """The canonical spelling of a parsed filter: parse(render(t)) == t, and two filters that parse to
    the same tree render the same (so identical filters share one evaluation)."""
    return ",".join(_render_top(item) for item in tree.items)


def _render_top(node: Node) -> str:
    if isinstance(node, Group):
        return f"{'not.' if node.negated else ''}{node.kind}=({_render_items(node)})"
    return f"{_render_field(node.field)}={_render_operation(node)}"


def _render_inner(node: Node) -> str:
    if isinstance(node, Group):
        return f"{'not.' if node.negated else ''}{node.kind}({_render_items(node)})"
    return f"{_render_field(node.field)}.{_render_operation(node)}"


def _render_items(group: Group) -> str:
    return ",".join(_render_inner(item) for item in group.items)


def _render_operation(condition: Condition) -> str:
    prefix = "not." if condition.negated else ""
    if condition.op == "in":
        return f"{prefix}in.({','.join(quote(v) for v in condition.value)})"
    if condition.op == "is":
        return f"{prefix}is.{condition.value}"
    assert isinstance(condition.value, str)
    return f"{prefix}{condition.op}.{quote(condition.value)}"


def _render_field(field: Field) -> str:
    text = quote(field.column)
    for position, step in enumerate(field.path):
        arrow = "->>" if field.as_text and position == len(field.path) - 1 else "->"
        text += arrow + (str(step) if isinstance(step, int) else quote(step))
    return text


def quote(text: str) -> str:
    """Double-quoted, with backslash escapes: safe in any position of a filter."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
