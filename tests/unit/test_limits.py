"""Limits without sockets: connection counting, the message-rate bucket, origins, and the expiry timer."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.services.limits import (
    ABUSE_SECONDS,
    MAX_TIMER_SECONDS,
    Admission,
    ConnectionLimiter,
    ExpiryTimer,
    LimitExceeded,
    MessageRate,
    origin_allowed,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- connections per user and per address ---------------------------------------------------------------


def test_connections_per_user() -> None:
    limiter = ConnectionLimiter(per_user=2, per_address=100)
    leases = [limiter.acquire("alice", f"10.0.0.{n}") for n in range(2)]
    with pytest.raises(LimitExceeded, match="for this user: at most 2"):
        limiter.acquire("alice", "10.0.0.9")
    limiter.acquire("bob", "10.0.0.9")  # another user is not affected
    assert limiter.connections_of("alice") == 2
    leases[0].release()
    limiter.acquire("alice", "10.0.0.9")
    assert limiter.connections_of("alice") == 2


def test_connections_per_address() -> None:
    limiter = ConnectionLimiter(per_user=100, per_address=2)
    limiter.acquire(None, "10.0.0.1")
    limiter.acquire("alice", "10.0.0.1")
    with pytest.raises(LimitExceeded, match="from this address: at most 2"):
        limiter.acquire(None, "10.0.0.1")
    limiter.acquire(None, "10.0.0.2")
    assert limiter.connections_from("10.0.0.1") == 2


def test_a_refused_connection_counts_nothing() -> None:
    limiter = ConnectionLimiter(per_user=1, per_address=5)
    limiter.acquire("alice", "10.0.0.1")
    for _ in range(3):
        with pytest.raises(LimitExceeded):
            limiter.acquire("alice", "10.0.0.1")
    # The refused attempts did not take address slots: four more fit.
    for _ in range(4):
        limiter.acquire(None, "10.0.0.1")
    assert limiter.connections_from("10.0.0.1") == 5


def test_release_is_idempotent_and_forgets_empty_keys() -> None:
    limiter = ConnectionLimiter(per_user=1, per_address=1)
    lease = limiter.acquire("alice", "10.0.0.1")
    lease.release()
    lease.release()
    assert limiter.connections_of("alice") == 0
    assert limiter.connections_from("10.0.0.1") == 0
    assert not limiter._users and not limiter._addresses
    limiter.acquire("alice", "10.0.0.1")  # the slot is free again, once


def test_unknown_address_and_anonymous_users_are_not_counted_there() -> None:
    limiter = ConnectionLimiter(per_user=1, per_address=1)
    for _ in range(3):
        limiter.acquire(None, None)  # no user, no address: nothing to count against
    limiter.acquire("alice", None)
    with pytest.raises(LimitExceeded):
        limiter.acquire("alice", None)


# --- message rate ---------------------------------------------------------------------------------------


def test_a_burst_of_the_rate_is_accepted_then_messages_are_refused() -> None:
    clock = Clock()
    rate = MessageRate(10, clock=clock)
    assert [rate.admit() for _ in range(10)] == [Admission.ACCEPT] * 10
    assert rate.admit() is Admission.REFUSE


def test_the_bucket_refills_at_the_rate() -> None:
    clock = Clock()
    rate = MessageRate(10, clock=clock)
    for _ in range(10):
        rate.admit()
    clock.advance(0.25)  # 2.5 messages' worth
    assert [rate.admit() for _ in range(3)] == [Admission.ACCEPT, Admission.ACCEPT, Admission.REFUSE]
    clock.advance(3600)  # never more than a burst saved up
    assert [rate.admit() for _ in range(11)].count(Admission.ACCEPT) == 10


def test_sending_at_the_rate_is_never_refused() -> None:
    clock = Clock()
    rate = MessageRate(50, clock=clock)
    for _ in range(10_000):
        assert rate.admit() is Admission.ACCEPT
        clock.advance(1 / 50)


def test_twice_the_rate_is_refused_but_not_closed() -> None:
    clock = Clock()
    rate = MessageRate(50, clock=clock)
    verdicts = []
    for _ in range(100 * 60):  # a minute at 100 per second
        verdicts.append(rate.admit())
        clock.advance(1 / 100)
    assert Admission.CLOSE not in verdicts
    assert verdicts.count(Admission.REFUSE) > 0


def test_three_times_the_rate_sustained_closes() -> None:
    clock = Clock()
    rate = MessageRate(50, clock=clock)
    sent = 0
    while (verdict := rate.admit()) is not Admission.CLOSE:
        sent += 1
        clock.advance(1 / 150)
        assert sent < 150 * 60, "never closed"
    # About ABUSE_SECONDS of sending at three times the rate (refusals drain twice as fast as they refill).
    assert ABUSE_SECONDS * 0.8 < sent / 150 < ABUSE_SECONDS * 1.5
    assert verdict is Admission.CLOSE


def test_a_flood_closes_after_the_burst_and_the_abuse_budget() -> None:
    clock = Clock()
    rate = MessageRate(4, clock=clock)
    verdicts = [rate.admit() for _ in range(40)]
    assert verdicts[:4] == [Admission.ACCEPT] * 4
    assert verdicts[4 : 4 + int(4 * ABUSE_SECONDS)] == [Admission.REFUSE] * int(4 * ABUSE_SECONDS)
    assert verdicts[4 + int(4 * ABUSE_SECONDS)] is Admission.CLOSE


def test_rates_below_one_per_second_still_allow_one_message() -> None:
    clock = Clock()
    rate = MessageRate(0.5, clock=clock)
    assert rate.admit() is Admission.ACCEPT
    assert rate.admit() is Admission.REFUSE
    clock.advance(2)
    assert rate.admit() is Admission.ACCEPT


# --- origins --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed", "expected"),
    [
        ("https://evil.example", [], True),  # no list: any origin
        (None, ["https://app.example"], True),  # no Origin header: not a browser
        ("https://app.example", ["https://app.example"], True),
        ("HTTPS://App.Example", ["https://app.example"], True),
        ("https://app.example/", ["https://app.example"], True),
        ("https://evil.example", ["https://app.example"], False),
        ("https://app.example.evil.example", ["https://app.example"], False),
        ("http://app.example", ["https://app.example"], False),
        ("https://app.example:8443", ["https://app.example"], False),
        ("null", ["https://app.example"], False),
        ("", ["https://app.example"], False),
    ],
)
def test_origin_allowed(origin: str | None, allowed: list[str], expected: bool) -> None:
    assert origin_allowed(origin, allowed) is expected


# --- expiry timer ---------------------------------------------------------------------------------------


async def test_expiry_timer_fires_once_after_the_deadline() -> None:
    fired = asyncio.Event()
    calls: list[float] = []

    def expired() -> None:
        calls.append(time.time())
        fired.set()

    timer = ExpiryTimer(expired)
    deadline = time.time() + 0.2
    timer.schedule(deadline)
    async with asyncio.timeout(15):
        await fired.wait()
    assert len(calls) == 1 and calls[0] >= deadline
    assert not timer.scheduled and timer.expires_at is None


async def test_expiry_timer_reschedule_and_cancel() -> None:
    calls: list[str] = []
    first = ExpiryTimer(lambda: calls.append("first"))
    first.schedule(time.time() + 0.05)
    first.schedule(time.time() + 3600)  # replaced: the early deadline is gone
    cancelled = ExpiryTimer(lambda: calls.append("cancelled"))
    cancelled.schedule(time.time() + 0.05)
    cancelled.cancel()
    disarmed = ExpiryTimer(lambda: calls.append("disarmed"))
    disarmed.schedule(time.time() + 0.05)
    disarmed.schedule(None)  # a token without exp
    sentinel = asyncio.Event()
    ExpiryTimer(sentinel.set).schedule(time.time() + 0.2)
    async with asyncio.timeout(15):
        await sentinel.wait()
    assert calls == []
    assert first.scheduled
    first.cancel()


async def test_a_timer_that_fires_before_the_wall_clock_deadline_rearms() -> None:
    clock = Clock()
    fired = asyncio.Event()
    timer = ExpiryTimer(fired.set, clock=clock)
    timer.schedule(clock.now + 10)
    # Fire it early by hand (as a wall clock set back would): it re-arms instead of expiring.
    assert timer._handle is not None
    timer._handle.cancel()
    timer._fire()
    assert not fired.is_set() and timer.scheduled
    clock.advance(10)
    timer._handle.cancel()
    timer._fire()
    assert fired.is_set() and not timer.scheduled


async def test_far_deadlines_wait_at_most_max_timer_seconds() -> None:
    timer = ExpiryTimer(lambda: None)
    timer.schedule(time.time() + 10 * 365 * 86400)
    assert timer._handle is not None
    remaining = timer._handle.when() - asyncio.get_running_loop().time()
    assert remaining <= MAX_TIMER_SECONDS
    timer.cancel()
