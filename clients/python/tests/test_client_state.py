"""The client's pure state: backoff bounds, resume points, presence, token timing, pacing (no socket)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxbase_realtime_client import Backoff, PresenceDiff, PresenceEntry, PresenceState
from fluxbase_realtime_client.buffer import EventBuffer
from fluxbase_realtime_client.pacing import TokenBucket
from fluxbase_realtime_client.presence import Presence
from fluxbase_realtime_client.resume import ResumePoint
from fluxbase_realtime_client.tokens import TokenSource, refresh_delay, token_expiry

# --- backoff ---------------------------------------------------------------------------------------------


@given(
    base=st.floats(0.01, 10),
    extra=st.floats(0, 100),
    attempt=st.integers(0, 10_000),
    draw=st.floats(0, 1),
)
def test_every_delay_is_within_zero_and_the_capped_exponential_bound(
    base: float, extra: float, attempt: int, draw: float
) -> None:
    backoff = Backoff(base=base, cap=base + extra)
    bound = min(backoff.cap, base * 2.0 ** min(attempt, 64))
    assert backoff.bound(attempt) == pytest.approx(bound)
    delay = backoff.delay(attempt, uniform=lambda low, high: low + (high - low) * draw)
    assert 0 <= delay <= backoff.cap
    assert delay <= bound * (1 + 1e-9)


def test_the_bound_doubles_until_the_cap_and_stays_there() -> None:
    backoff = Backoff(base=0.5, cap=20)
    assert [backoff.bound(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 20, 20]
    assert backoff.bound(10**6) == 20  # never gives up, never overflows


def test_full_jitter_uses_the_whole_range() -> None:
    backoff = Backoff(base=1, cap=8)
    delays = [backoff.delay(3) for _ in range(2000)]
    assert min(delays) < 1 and max(delays) > 7  # spread over [0, 8], not clustered at the bound
    assert all(0 <= d <= 8 for d in delays)


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_bad_backoff_settings_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(base=base, cap=cap)


# --- resume points ---------------------------------------------------------------------------------------


def test_a_resume_point_drops_what_was_delivered_and_resumes_after_it() -> None:
    point = ResumePoint(since=10)
    assert [n for n in (9, 10, 11, 11, 12, 5, 13) if point.accept(n)] == [11, 12, 13]
    assert point.since == 13


def test_a_subscription_from_now_takes_the_start_the_ack_gives() -> None:
    point = ResumePoint()
    point.acked(None)
    assert point.since is None  # a server that gives none: resumes from "now"
    point.acked(40)
    assert point.since == 40 and not point.accept(40) and point.accept(41)
    point.acked(99)  # a later ack does not move a point that has one
    assert point.since == 41


def test_after_a_gap_lower_ids_are_accepted_and_the_old_since_is_kept_until_one_arrives() -> None:
    point = ResumePoint(since=1000)  # e.g. newer than a restored database
    point.gap()
    assert point.since == 1000  # a disconnect now reports the gap again rather than skipping anything
    assert point.accept(7) and point.since == 7
    assert not point.accept(7) and point.accept(8)


@given(st.lists(st.integers(0, 50), max_size=60), st.none() | st.integers(0, 50))
def test_accepted_ids_increase_strictly_and_stay_above_since(ids: list[int], since: int | None) -> None:
    point = ResumePoint(since)
    accepted = [n for n in ids if point.accept(n)]
    assert accepted == sorted(set(accepted))
    assert all(n > since for n in accepted) if since is not None else True


# --- presence ---------------------------------------------------------------------------------------------


def test_presence_follows_state_then_diffs() -> None:
    presence = Presence()
    presence.apply(PresenceState("broadcast:r", {"ann": (PresenceEntry("p1", {"tab": 1}),)}))
    presence.apply(
        PresenceDiff(
            "broadcast:r",
            joins={"ann": (PresenceEntry("p2", {"tab": 2}),), "bob": (PresenceEntry("p3", {}),)},
            updates={},
            leaves={},
        )
    )
    presence.apply(
        PresenceDiff("broadcast:r", joins={}, updates={"ann": (PresenceEntry("p1", {"tab": 9}),)}, leaves={})
    )
    assert presence.state() == {
        "ann": [PresenceEntry("p1", {"tab": 9}), PresenceEntry("p2", {"tab": 2})],
        "bob": [PresenceEntry("p3", {})],
    }
    presence.apply(
        PresenceDiff(
            "broadcast:r",
            joins={},
            updates={},
            leaves={"bob": (PresenceEntry("p3", {}),), "ann": (PresenceEntry("p1", {}),), "zed": ()},
        )
    )
    assert presence.state() == {"ann": [PresenceEntry("p2", {"tab": 2})]}
    presence.apply(PresenceState("broadcast:r", {}))  # a full state replaces everything
    assert presence.state() == {}


# --- tokens -----------------------------------------------------------------------------------------------


def _jwt(claims: object) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{body}.c2ln"


def test_token_expiry_is_read_without_verification() -> None:
    assert token_expiry(_jwt({"sub": "u", "exp": 1700000000})) == 1700000000.0
    assert token_expiry(_jwt({"sub": "u"})) is None
    assert token_expiry(_jwt({"exp": True})) is None
    assert token_expiry(_jwt([1])) is None
    assert token_expiry("not-a-jwt") is None
    assert token_expiry("a.%%%.c") is None


@pytest.mark.parametrize(
    ("remaining", "margin", "expected"),
    [(3600, 30, 3570), (40, 30, 20), (3, 30, 1.5), (0, 30, 0), (-5, 30, 0)],
)
def test_refresh_is_due_a_margin_before_exp_or_halfway_through_a_short_life(
    remaining: float, margin: float, expected: float
) -> None:
    assert refresh_delay(1000 + remaining, 1000, margin) == pytest.approx(expected)


async def test_a_token_source_is_a_string_or_an_async_function() -> None:
    assert await TokenSource("t").get() == "t" and not TokenSource("t").fresh
    assert await TokenSource(None).get() is None

    async def fresh() -> str:
        return "fresh"

    assert await TokenSource(fresh).get() == "fresh" and TokenSource(fresh).fresh
    with pytest.raises(TypeError):
        TokenSource(42)  # type: ignore[arg-type]


# --- pacing and buffering ---------------------------------------------------------------------------------


def test_the_bucket_allows_a_burst_then_paces_at_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    waits = [bucket.take(now=0.0) for _ in range(5)]
    assert waits[:3] == [0, 0, 0]
    assert waits[3:] == pytest.approx([0.1, 0.2])
    assert bucket.take(now=10.0) == 0  # refilled


async def test_a_full_buffer_holds_the_producer_until_the_consumer_takes() -> None:
    buffer: EventBuffer[int] = EventBuffer(2)
    await buffer.put(1)
    await buffer.put(2)
    third = asyncio.create_task(buffer.put(3))
    await asyncio.sleep(0)
    assert not third.done() and len(buffer) == 2
    assert await buffer.get() == 1
    await third
    buffer.end(RuntimeError("ended"))
    assert [await buffer.get(), await buffer.get()] == [2, 3]
    with pytest.raises(RuntimeError, match="ended"):
        await buffer.get()


def test_the_bucket_halves_its_rate_when_the_server_says_rate_limited() -> None:
    bucket = TokenBucket(rate=40)
    bucket.slow_down()
    assert (bucket.rate, bucket.burst) == (20, 20)
    for _ in range(10):
        bucket.slow_down()
    assert (bucket.rate, bucket.burst) == (1, 1)  # never below one message a second


def test_a_diff_applies_its_leaves_before_its_joins() -> None:
    presence = Presence()
    presence.apply(PresenceState("broadcast:r", {"ann": (PresenceEntry("p1", 1),)}))
    again = (PresenceEntry("p1", 2),)
    presence.apply(PresenceDiff("broadcast:r", joins={"ann": again}, updates={}, leaves={"ann": again}))
    assert presence.state() == {"ann": [PresenceEntry("p1", 2)]}
