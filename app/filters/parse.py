r"""Filter strings in PostgREST's syntax → filter trees (app.filters.syntax). Pure: no I/O.

    filter     := condition ("," condition)*                       conditions are ANDed
    condition  := ["not."] ("and" | "or") "=(" inner ("," inner)* ")"
                | field "=" ["not."] operator "." value
    inner      := ["not."] ("and" | "or") "(" inner ("," inner)* ")"
                | field "." ["not."] operator "." value
    field      := name ( "->" key )* [ "->>" key ]                 JSON fields: data->a->>b
    value      := quoted | bare          in: "(" item ("," item)* ")"     is: null | true | false | unknown

A name, key or value may be double-quoted ("a,b", "my.column"), with backslash escaping `"` and `\`.
Unquoted, a value runs to the next `,` (and, inside a group, `)`); a name or key to the next `.`, `,`,
`(`, `)`, `=`, `"` or `->`. A bare key of digits is an array position (data->0). Every error is a
sentence saying what is wrong and where (1-based character positions).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.filters.syntax import IS_VALUES, OPERATORS, Condition, Field, Group, GroupKind, Node, Operator

_NAME_STOPS = frozenset('.,()="')
_GROUP_KINDS: tuple[GroupKind, ...] = ("and", "or")


class FilterError(ValueError):
    """A filter the server refuses; `str(error)` is the sentence sent to the client."""


@dataclass(frozen=True, slots=True)
class FilterLimits:
    """How large a filter may be (settings REALTIME_MAX_FILTER_*)."""

    max_length: int = 1024
    max_conditions: int = 32
    max_depth: int = 8


def parse_filter(text: str, limits: FilterLimits = FilterLimits()) -> Group:
    """Parse a filter into its tree (one top-level AND group), or raise FilterError."""
    if len(text) > limits.max_length:
        raise FilterError(
            f"filter is too long: {len(text)} characters, at most {limits.max_length} are allowed"
        )
    if not text:
        raise FilterError("filter is empty: leave 'filter' out to receive every row")
    if "\x00" in text:
        raise FilterError("filter contains a NUL character")
    return _Parser(text, limits).filter()


class _Parser:
    def __init__(self, text: str, limits: FilterLimits) -> None:
        self.text = text
        self.pos = 0
        self.limits = limits
        self.count = 0

    # Structure

    def filter(self) -> Group:
        items = [self._top_condition()]
        while not self._at_end():
            self._expect(",", "',' between conditions")
            items.append(self._top_condition())
        return Group("and", tuple(items))

    def _top_condition(self) -> Node:
        group = self._group_head(top=True)
        if group is not None:
            negated, kind = group
            return self._group_body(kind, negated, depth=1)
        start = self.pos
        field = self._field()
        if not self._take("="):
            self._fail(f"expected '=' after {self._quoted_span(start)}, as in column=eq.value", self.pos)
        return self._operation(field, top=True)

    def _inner(self, depth: int) -> Node:
        group = self._group_head(top=False)
        if group is not None:
            negated, kind = group
            return self._group_body(kind, negated, depth + 1)
        start = self.pos
        field = self._field()
        if not self._take("."):
            self._fail(
                f"expected '.' after {self._quoted_span(start)}: inside and/or, conditions are written "
                "column.op.value",
                self.pos,
            )
        node = self._operation(field, top=False)
        return node

    def _group_head(self, *, top: bool) -> tuple[bool, GroupKind] | None:
        """`[not.]and=(` / `[not.]or=(` (top) or `[not.]and(` / `[not.]or(` (inner), consumed; else None."""
        rest = self.text[self.pos :]
        negated = rest.startswith("not.")
        if negated:
            rest = rest[4:]
        for kind in _GROUP_KINDS:
            opener = f"{kind}=(" if top else f"{kind}("
            if rest.startswith(opener):
                self.pos += (4 if negated else 0) + len(opener)
                return negated, kind
        return None

    def _group_body(self, kind: GroupKind, negated: bool, depth: int) -> Group:
        if depth > self.limits.max_depth:
            self._fail(f"filter is nested too deeply: at most {self.limits.max_depth} levels of and/or")
        opened = self.pos - 1
        if self._take(")"):
            self._fail(f"{kind}() needs at least one condition", opened)
        items = [self._inner(depth)]
        while self._take(","):
            items.append(self._inner(depth))
        if self._at_end():
            self._fail(f"unclosed parenthesis opened at character {opened + 1}")
        self._expect(")", "',' or ')'")
        self._after_item()
        return Group(kind, tuple(items), negated)

    def _after_item(self) -> None:
        """After a condition or group: the end, a ',' or a ')' (checked by the caller)."""
        if not self._at_end() and self.text[self.pos] not in ",)":
            self._fail(f"unexpected {self.text[self.pos]!r}: expected ',' or the end", self.pos)

    # Conditions

    def _operation(self, field: Field, *, top: bool) -> Condition:
        self.count += 1
        if self.count > self.limits.max_conditions:
            self._fail(f"filter has too many conditions: at most {self.limits.max_conditions} are allowed")
        negated = self.text.startswith("not.", self.pos)
        if negated:
            self.pos += 4
        start = self.pos
        while not self._at_end() and self.text[self.pos].isalpha():
            self.pos += 1
        name = self.text[start : self.pos]
        if name not in OPERATORS:
            shown = name or self.text[start : start + 1] or "nothing"
            self._fail(
                f"unknown operator {shown!r} at character {start + 1}: expected one of {', '.join(OPERATORS)}"
            )
        op: Operator = name  # type: ignore[assignment]  # checked against OPERATORS just above
        if not self._take("."):
            self._fail(f"expected '.' and a value after the operator {op!r}", self.pos)
        stops = "," if top else ",)"
        value: str | tuple[str, ...]
        if op == "in":
            value = self._list()
        elif op == "is":
            word_start = self.pos
            word = self._bare(stops).lower()
            if word not in IS_VALUES:
                self._fail(f"'is' takes null, true, false or unknown, not {word!r}", word_start)
            value = word
        else:
            value = self._value(stops)
        if top:
            if not self._at_end() and self.text[self.pos] != ",":
                self._fail(f"unexpected {self.text[self.pos]!r} after a condition", self.pos)
        else:
            self._after_item()
        return Condition(field, op, value, negated)

    def _list(self) -> tuple[str, ...]:
        opened = self.pos
        if not self._take("("):
            self._fail("'in' takes a list in parentheses, as in in.(1,2,3)", self.pos)
        if self._take(")"):
            self._fail("'in' needs at least one value", opened)
        items = [self._value(",)")]
        while self._take(","):
            items.append(self._value(",)"))
        if self._at_end():
            self._fail(f"unclosed parenthesis opened at character {opened + 1}")
        self._expect(")", "',' or ')' in the list")
        return tuple(items)

    # Tokens

    def _field(self) -> Field:
        column = self._name("a column name")
        path: list[str | int] = []
        as_text = False
        while self.text.startswith("->", self.pos):
            if as_text:
                self._fail("'->>' gives text: it can only be the last step of a JSON field", self.pos)
            as_text = self.text.startswith("->>", self.pos)
            self.pos += 3 if as_text else 2
            quoted = self._peek() == '"'
            key = self._name("a JSON key")
            number = key[1:] if key.startswith("-") else key
            path.append(int(key) if not quoted and number.isdigit() and len(key) < 10 else key)
        return Field(column, tuple(path), as_text)

    def _name(self, what: str) -> str:
        if self._peek() == '"':
            return self._quoted()
        start = self.pos
        while not self._at_end() and self.text[self.pos] not in _NAME_STOPS:
            if self.text.startswith("->", self.pos):
                break
            self.pos += 1
        if self.pos == start:
            self._fail(f"expected {what} at character {start + 1}")
        return self.text[start : self.pos]

    def _value(self, stops: str) -> str:
        if self._peek() == '"':
            value = self._quoted()
            if not self._at_end() and self.text[self.pos] not in stops:
                self._fail(f"unexpected {self.text[self.pos]!r} after a quoted value", self.pos)
            return value
        return self._bare(stops)

    def _bare(self, stops: str) -> str:
        start = self.pos
        while not self._at_end() and self.text[self.pos] not in stops:
            self.pos += 1
        return self.text[start : self.pos]

    def _quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while not self._at_end():
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif char == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(char)
                self.pos += 1
        self._fail(f"unterminated quoted string starting at character {start + 1}")
        raise AssertionError  # unreachable: _fail raises

    # Helpers

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _at_end(self) -> bool:
        return self.pos >= len(self.text)

    def _take(self, char: str) -> bool:
        if self.text.startswith(char, self.pos):
            self.pos += len(char)
            return True
        return False

    def _expect(self, char: str, what: str) -> None:
        if not self._take(char):
            found = repr(self.text[self.pos]) if not self._at_end() else "the end"
            self._fail(f"expected {what}, found {found}", self.pos)

    def _quoted_span(self, start: int) -> str:
        return repr(_clip(self.text[start : self.pos]))

    def _fail(self, message: str, at: int | None = None) -> None:
        where = f" (at character {at + 1})" if at is not None and "character" not in message else ""
        raise FilterError(f"invalid filter: {message}{where}")


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
