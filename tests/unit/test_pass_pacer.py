"""When the change feed paces its sequencer passes (app.services.changes.PassPacer)."""

from __future__ import annotations

import pytest

from app.services.pacing import PassPacer


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


def test_sustained_writes_make_the_feed_poll_and_take_the_lease() -> None:
    pacer = PassPacer(0.01, grace=0.5)
    assert (pacer.polling, pacer.lease) == (False, None)
    for _ in range(3):
        pacer.pause_after(1.0, 1.002, more_arrived=True)
    assert (pacer.polling, pacer.lease) == (True, 0.5)
    # Polling, writers no longer notify: passes that find changes keep it going, nothing wakes it.
    assert pacer.pause_after(1.01, 1.012, more_arrived=False, found_new=True) == pytest.approx(0.008)
    assert pacer.polling


def test_polling_ends_only_after_twice_the_grace_without_a_new_change() -> None:
    pacer = PassPacer(0.01, grace=0.5)
    for _ in range(3):
        pacer.pause_after(1.0, 1.002, more_arrived=True)
    pacer.pause_after(2.0, 2.0, more_arrived=False, found_new=True)
    # A writer that read the lease taken at 2.0 (valid until 2.5) may commit a little later: still polled.
    for now in (2.5, 2.9, 2.99):
        pacer.pause_after(now, now, more_arrived=False)
        assert pacer.polling, now
    assert pacer.pause_after(3.0, 3.0, more_arrived=False) == 0.0
    assert (pacer.polling, pacer.lease) == (False, None)
    # Back to one pass per wake-up, and a new streak is needed to poll again.
    assert pacer.pause_after(3.1, 3.101, more_arrived=True) == 0.0
    assert not pacer.polling


def test_without_a_grace_or_an_interval_the_feed_never_polls() -> None:
    for pacer in (PassPacer(0.01), PassPacer(0.0, grace=0.5)):
        for _ in range(5):
            pacer.pause_after(1.0, 1.002, more_arrived=True)
        assert (pacer.polling, pacer.lease) == (False, None)
