"""The filter set's index: equality routes decide without a query; the rest goes to PostgreSQL."""

from __future__ import annotations

from app.filters.compile import compile_filter
from app.filters.evaluate import Route, TableFilter
from app.filters.matching import FilterSet
from app.filters.parse import parse_filter
from app.filters.syntax import render


def table_filter(text: str, route: Route | None) -> TableFilter:
    tree = parse_filter(text)
    return TableFilter(render(tree), tree, compile_filter(tree, "t"), route, frozenset())


def test_routes_pick_the_filters_of_the_record_value_only() -> None:
    filters = FilterSet()
    for user in range(10_000):
        filters.add(table_filter(f"user_id=eq.{user}", Route("user_id", user, decides=True)))
    partly = table_filter("user_id=eq.7,status=eq.paid", Route("user_id", 7, decides=False))
    filters.add(partly)
    general = table_filter("amount=gt.5", None)
    filters.add(general)
    decided, to_check = filters.candidates('{"user_id": 7, "status": "paid"}')
    assert decided == {'"user_id"=eq."7"'}
    assert to_check == {partly.key, general.key}
    assert filters.candidates('{"user_id": null}') == (set(), {general.key})
    assert filters.candidates('{"user_id": 10001}') == (set(), {general.key})


def test_a_filter_used_twice_stays_until_its_last_user_leaves() -> None:
    filters = FilterSet()
    one = table_filter("user_id=eq.1", Route("user_id", 1, decides=True))
    filters.add(one)
    filters.add(one)
    filters.discard(one.key)
    assert filters.candidates('{"user_id": 1}')[0] == {one.key}
    filters.discard(one.key)
    assert one.key not in filters and len(filters) == 0
    assert filters.candidates('{"user_id": 1}') == (set(), set())


def test_booleans_and_integers_route_by_their_own_column() -> None:
    filters = FilterSet()
    flag = table_filter("done=eq.true", Route("done", True, decides=True))
    filters.add(flag)
    assert filters.candidates('{"done": true, "n": 1}')[0] == {flag.key}
    assert filters.candidates('{"done": false, "n": 1}')[0] == set()
