"""The feed's window of recent changes: complete or nothing, bounded in count and bytes."""

from __future__ import annotations

from app.services.change_frames import Change, RecentChanges


def change(change_id: int, size: int = 10) -> Change:
    return Change(change_id, "table:public.t", "public", "t", "INSERT", "{}", None, False, "x" * size)


def test_after_returns_exactly_the_newer_changes_in_order() -> None:
    recent = RecentChanges()
    for n in range(1, 11):
        recent.add(change(n))
    assert [c.id for c in recent.after(6) or []] == [7, 8, 9, 10]
    assert recent.after(10) == []
    assert [c.id for c in recent.after(0) or []] == list(range(1, 11))


def test_after_says_none_when_part_of_the_range_is_no_longer_held() -> None:
    recent = RecentChanges(max_changes=3)
    for n in range(1, 11):
        recent.add(change(n))
    assert [c.id for c in recent.after(7) or []] == [8, 9, 10]
    assert recent.after(6) is None
    assert RecentChanges().after(0) is None


def test_the_byte_budget_evicts_oldest_but_keeps_the_newest() -> None:
    recent = RecentChanges(max_bytes=250)
    for n in range(1, 6):
        recent.add(change(n, size=100))
    assert [c.id for c in recent.after(3) or []] == [4, 5]
    assert recent.after(2) is None
    huge = RecentChanges(max_bytes=10)
    huge.add(change(1, size=1000))
    assert [c.id for c in huge.after(0) or []] == [1]


def test_a_gap_in_ids_forgets_what_came_before() -> None:
    recent = RecentChanges()
    recent.add(change(1))
    recent.add(change(2))
    recent.add(change(5))
    assert recent.after(1) is None
    assert [c.id for c in recent.after(4) or []] == [5]
