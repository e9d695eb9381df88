"""The filter parser: PostgREST's syntax into trees, every refusal a sentence; no socket, no database."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.filters.parse import FilterError, FilterLimits, parse_filter
from app.filters.syntax import IS_VALUES, OPERATORS, Condition, Field, Group, Node, conditions, render

UNLIMITED = FilterLimits(max_length=10**6, max_conditions=10**6, max_depth=50)

text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)
names = text.filter(bool)
keys = st.one_of(names, st.integers(min_value=-5, max_value=10**6))
fields = st.builds(
    lambda column, path, as_text: Field(column, tuple(path), as_text and bool(path)),
    names,
    st.lists(keys, max_size=3),
    st.booleans(),
)


@st.composite
def condition_strategy(draw: st.DrawFn) -> Condition:
    op = draw(st.sampled_from(OPERATORS))
    value: str | tuple[str, ...]
    if op == "in":
        value = tuple(draw(st.lists(text, min_size=1, max_size=4)))
    elif op == "is":
        value = draw(st.sampled_from(IS_VALUES))
    else:
        value = draw(text)
    return Condition(draw(fields), op, value, draw(st.booleans()))


nodes: st.SearchStrategy[Node] = st.recursive(
    condition_strategy(),
    lambda children: st.builds(
        lambda kind, items, negated: Group(kind, tuple(items), negated),
        st.sampled_from(("and", "or")),
        st.lists(children, min_size=1, max_size=4),
        st.booleans(),
    ),
    max_leaves=12,
)
trees = st.lists(nodes, min_size=1, max_size=4).map(lambda items: Group("and", tuple(items)))


@given(trees)
@settings(max_examples=400)
def test_every_tree_survives_its_canonical_spelling(tree: Group) -> None:
    assert parse_filter(render(tree), UNLIMITED) == tree


@given(st.text(alphabet=st.sampled_from(list('ab.,()=-> "\\*notinequlk')), max_size=40))
@settings(max_examples=1500)
def test_any_text_parses_or_is_refused_with_a_sentence(candidate: str) -> None:
    try:
        tree = parse_filter(candidate, UNLIMITED)
    except FilterError as error:
        assert str(error)[:1].isalpha() and len(str(error)) < 300
    else:
        assert parse_filter(render(tree), UNLIMITED) == tree


def field(column: str) -> Field:
    return Field(column)


@pytest.mark.parametrize(
    ("spelling", "tree"),
    [
        (
            "status=eq.paid,amount=gt.100",
            Group("and", (Condition(field("status"), "eq", "paid"), Condition(field("amount"), "gt", "100"))),
        ),
        (
            "or=(age.lt.18,age.gt.21)",
            Group(
                "and",
                (Group("or", (Condition(field("age"), "lt", "18"), Condition(field("age"), "gt", "21"))),),
            ),
        ),
        (
            "not.or=(a.eq.1,and(b.not.is.null,c.like.*x*))",
            Group(
                "and",
                (
                    Group(
                        "or",
                        (
                            Condition(field("a"), "eq", "1"),
                            Group(
                                "and",
                                (
                                    Condition(field("b"), "is", "null", True),
                                    Condition(field("c"), "like", "*x*"),
                                ),
                            ),
                        ),
                        True,
                    ),
                ),
            ),
        ),
        ('name=in.(a,b,"c,d")', Group("and", (Condition(field("name"), "in", ("a", "b", "c,d")),))),
        ("x=is.NULL", Group("and", (Condition(field("x"), "is", "null"),))),
        ("x=not.eq.1", Group("and", (Condition(field("x"), "eq", "1", True),))),
        ("x=eq.", Group("and", (Condition(field("x"), "eq", ""),))),
        ("x=eq.a.b:c(d)", Group("and", (Condition(field("x"), "eq", "a.b:c(d)"),))),
        ('x=eq."a\\"b\\\\"', Group("and", (Condition(field("x"), "eq", 'a"b\\'),))),
        ('"my.col"=eq.1', Group("and", (Condition(field("my.col"), "eq", "1"),))),
        ("data->>key=eq.v", Group("and", (Condition(Field("data", ("key",), True), "eq", "v"),))),
        (
            "data->a->0->>b=ilike.*X",
            Group("and", (Condition(Field("data", ("a", 0, "b"), True), "ilike", "*X"),)),
        ),
        ('data->"0"=eq.1', Group("and", (Condition(Field("data", ("0",)), "eq", "1"),))),
        ("and=eq.1", Group("and", (Condition(field("and"), "eq", "1"),))),
    ],
)
def test_spellings(spelling: str, tree: Group) -> None:
    assert parse_filter(spelling) == tree


@pytest.mark.parametrize(
    ("spelling", "error"),
    [
        ("", "filter is empty"),
        ("a=foo.1", "unknown operator 'foo' at character 3: expected one of eq, neq, gt"),
        ("a=not.not.eq.1", "unknown operator 'not'"),
        ("a=eq", "expected '.' and a value after the operator 'eq'"),
        ("a", "expected '=' after 'a', as in column=eq.value"),
        ("a.eq.1", "expected '=' after 'a'"),
        ("or=(a=eq.1)", "inside and/or, conditions are written column.op.value"),
        ("or=(a.eq.1", "unclosed parenthesis opened at character 4"),
        ("or=()", "or() needs at least one condition"),
        ("a=in.()", "'in' needs at least one value"),
        ("a=in.1,2", "'in' takes a list in parentheses"),
        ("a=in.(1,2", "unclosed parenthesis"),
        ("a=is.maybe", "'is' takes null, true, false or unknown, not 'maybe'"),
        ('a=eq."x"y', "unexpected 'y' after a quoted value"),
        ('a=eq."x', "unterminated quoted string starting at character 6"),
        ("data->>a->b=eq.1", "'->>' gives text: it can only be the last step"),
        ("data->=eq.1", "expected a JSON key at character 7"),
        ("=eq.1", "expected a column name at character 1"),
        ("a=eq.1,", "expected a column name at character 8"),
        ("and=(a.eq.1))", "expected ',' between conditions, found ')'"),
        ("or=(a.eq.1)x", "unexpected 'x': expected ',' or the end"),
        ("a=eq.\x00", "NUL"),
    ],
)
def test_refusals_say_what_is_wrong(spelling: str, error: str) -> None:
    with pytest.raises(FilterError) as raised:
        parse_filter(spelling)
    assert error in str(raised.value)


def test_limits() -> None:
    limits = FilterLimits(max_length=40, max_conditions=3, max_depth=2)
    parse_filter("a=eq.1,b=eq.2,c=eq.3", limits)
    with pytest.raises(FilterError, match="filter is too long: 41 characters, at most 40 are allowed"):
        parse_filter("a=eq." + "x" * 36, limits)
    with pytest.raises(FilterError, match="too many conditions: at most 3 are allowed"):
        parse_filter("a=eq.1,b=eq.2,c=eq.3,d=eq.4", limits)
    with pytest.raises(FilterError, match="too many conditions"):
        parse_filter("or=(a.eq.1,b.eq.2,c.eq.3,d.eq.4)", limits)
    parse_filter("or=(and(a.eq.1))", limits)
    with pytest.raises(FilterError, match="nested too deeply: at most 2 levels"):
        parse_filter("or=(and(or(a.eq.1)))", limits)


def test_the_default_limits_stop_deep_nesting_before_python_does() -> None:
    with pytest.raises(FilterError, match="nested too deeply"):
        parse_filter("or=(" + "and(" * 300 + "a.eq.1" + ")" * 301, FilterLimits(max_length=10**6))


def test_conditions_lists_every_leaf() -> None:
    tree = parse_filter("a=eq.1,or=(b.eq.2,and(c.eq.3))")
    assert [c.field.column for c in conditions(tree)] == ["a", "b", "c"]
