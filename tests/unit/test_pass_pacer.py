"""When the change feed paces its sequencer passes (app.services.changes.PassPacer)."""

from __future__ import annotations

import pytest

from app.services.changes import PassPacer


def test_an_idle_or_moderately_busy_feed_never_waits() -> None:
    pacer = PassPacer(0.01)
    # Quiet passes, and changes that committed during a single pass now and then.
    pattern = [False, True, False, True, True, False, False, True]
    assert [pacer.pause_after(1.0, 1.001, more_arrived=more) for more in pattern] == [0.0] * len(pattern)


def test_sustained_writes_start_passes_at_most_once_per_interval() -> None:
    pacer = PassPacer(0.01)
    pauses = [pacer.pause_after(1.0, 1.002, more_arrived=True) for _ in range(5)]
    assert pauses[:2] == [0.0, 0.0]
    assert pauses[2:] == [pytest.approx(0.008)] * 3


def test_a_quiet_pass_ends_the_streak() -> None:
    pacer = PassPacer(0.01)
    for _ in range(3):
        pacer.pause_after(1.0, 1.002, more_arrived=True)
    assert pacer.pause_after(1.0, 1.002, more_arrived=False) == 0.0
    assert pacer.pause_after(1.0, 1.002, more_arrived=True) == 0.0


def test_a_pass_longer_than_the_interval_waits_no_more_and_zero_turns_pacing_off() -> None:
    slow = PassPacer(0.01)
    assert [slow.pause_after(1.0, 1.05, more_arrived=True) for _ in range(4)] == [0.0] * 4
    off = PassPacer(0.0)
    assert [off.pause_after(1.0, 1.001, more_arrived=True) for _ in range(4)] == [0.0] * 4
