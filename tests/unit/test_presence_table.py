"""The presence table and its diffs (pure): joins, updates, leaves, whole origins replaced or dropped,
and the merging of diffs within one turn of the event loop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.services.presence import Presence, PresenceDiff, PresenceTable

ANN = Presence("ann", '{"n":1}')
ANN2 = Presence("ann", '{"n":2}')
BOB = Presence("bob", "{}")


def test_join_update_leave() -> None:
    table = PresenceTable()
    joined = table.put("o1", "c", "p1", ANN)
    assert joined.joins == {"ann": [("p1", '{"n":1}')]} and not joined.updates and not joined.leaves
    assert not table.put("o1", "c", "p1", ANN)  # the same state again: nothing changed
    updated = table.put("o1", "c", "p1", ANN2)
    assert updated.updates == {"ann": [("p1", '{"n":2}')]} and not updated.joins and not updated.leaves
    left = table.remove("o1", "c", "p1")
    assert left.leaves == {"ann": [("p1", '{"n":2}')]}
    assert table.entries("c") == {} and table.count("c") == 0 and list(table.origins()) == []


def test_one_key_many_entries_and_channels_apart() -> None:
    table = PresenceTable()
    table.put("o1", "c", "p1", ANN)
    table.put("o2", "c", "p2", ANN2)
    table.put("o1", "d", "p3", BOB)
    assert table.entries("c") == {"ann": [("p1", '{"n":1}'), ("p2", '{"n":2}')]}
    assert table.entries("d") == {"bob": [("p3", "{}")]}


def test_an_origin_cannot_remove_another_origins_presence() -> None:
    table = PresenceTable()
    table.put("o1", "c", "p1", ANN)
    assert not table.remove("o2", "c", "p1")
    assert table.count("c") == 1


def test_replace_origin_is_the_difference() -> None:
    table = PresenceTable()
    table.put("o1", "c", "p1", ANN)
    table.put("o1", "c", "p2", BOB)
    table.put("o2", "c", "p9", BOB)
    diffs = table.replace_origin("o1", {"c": {"p1": ANN2, "p3": BOB}, "d": {"p4": ANN}})
    assert diffs["c"].updates == {"ann": [("p1", '{"n":2}')]}
    assert diffs["c"].joins == {"bob": [("p3", "{}")]}
    assert diffs["c"].leaves == {"bob": [("p2", "{}")]}
    assert diffs["d"].joins == {"ann": [("p4", '{"n":1}')]}
    dropped = table.drop_origin("o1")
    assert set(dropped) == {"c", "d"}
    assert table.entries("c") == {"bob": [("p9", "{}")]}


def test_merge_folds_a_turns_diffs() -> None:
    diff = PresenceDiff()
    diff.join("p1", ANN)
    later = PresenceDiff()
    later.update("p1", ANN2)
    diff.merge(later)
    assert diff.joins == {"ann": [("p1", '{"n":2}')]} and not diff.updates  # joined with the newer state
    gone = PresenceDiff()
    gone.leave("p1", ANN2)
    diff.merge(gone)
    assert not diff  # joined and left within the turn: nothing to say


# Property: applying the merged diff of a sequence of operations to the table's state before them gives
# the table's state after them (what a subscriber holds equals what the table holds).
operations = st.lists(
    st.tuples(st.sampled_from(["put", "remove"]), st.sampled_from(["p1", "p2", "p3"]), st.integers(0, 2)),
    max_size=30,
)


def _view(table: PresenceTable, channel: str) -> dict[str, str]:
    return {pid: state for entries in table.entries(channel).values() for pid, state in entries}


@given(operations, operations)
def test_merged_diffs_take_a_subscriber_from_the_old_state_to_the_new(
    before: list[tuple[str, str, int]], during: list[tuple[str, str, int]]
) -> None:
    table = PresenceTable()
    for op, pid, n in before:
        _apply(table, op, pid, n)
    held = _view(table, "c")
    merged = PresenceDiff()
    for op, pid, n in during:
        merged.merge(_apply(table, op, pid, n))
    for entries in merged.leaves.values():
        for pid, _ in entries:
            assert pid in held
            del held[pid]
    for part in (merged.joins, merged.updates):
        for entries in part.values():
            for pid, state in entries:
                assert (pid in held) == (part is merged.updates)
                held[pid] = state
    assert held == _view(table, "c")


def _apply(table: PresenceTable, op: str, pid: str, n: int) -> PresenceDiff:
    if op == "put":
        return table.put("o", "c", pid, Presence("k", f'{{"n":{n}}}'))
    return table.remove("o", "c", pid)
