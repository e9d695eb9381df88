"""BatchedLookup: one fetch per batch of concurrent questions, never an answer fetched before its question."""

from __future__ import annotations

import asyncio

import pytest

from app.services.coalesce import BatchedLookup, Busy


class Source:
    """A fetch whose batches the test releases one at a time (an event per batch)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release: list[asyncio.Event] = []
        self.version = 0  # what the "database" says now; the answer carries the version seen at fetch

    async def fetch(self, keys: list[str]) -> dict[str, tuple[str, int] | Exception]:
        self.batches.append(keys)
        seen = self.version
        gate = asyncio.Event()
        self.release.append(gate)
        await gate.wait()
        return {key: ValueError(key) if key.startswith("bad") else (key, seen) for key in keys}


async def until(condition: object) -> None:
    for _ in range(1000):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_questions_asked_together_share_one_fetch_and_get_their_own_answers() -> None:
    source = Source()
    lookup: BatchedLookup[str, tuple[str, int]] = BatchedLookup(source.fetch, max_waiting=100)
    asks = [asyncio.create_task(lookup.get(key)) for key in ("a", "b", "a", "c")]
    await until(lambda: source.release)
    source.release[0].set()
    assert await asyncio.gather(*asks) == [("a", 0), ("b", 0), ("a", 0), ("c", 0)]
    assert source.batches == [["a", "b", "c"]]  # distinct keys, once each
    assert (lookup.asked, lookup.batches, lookup.waiting) == (4, 1, 0)


async def test_a_question_asked_while_a_fetch_runs_waits_for_the_next_fetch() -> None:
    source = Source()
    lookup: BatchedLookup[str, tuple[str, int]] = BatchedLookup(source.fetch, max_waiting=100)
    first = asyncio.create_task(lookup.get("a"))
    await until(lambda: source.release)
    source.version = 1  # the database changed after the first fetch began
    later = asyncio.create_task(lookup.get("a"))
    await asyncio.sleep(0)
    source.release[0].set()
    assert await first == ("a", 0)
    await until(lambda: len(source.release) == 2)
    source.release[1].set()
    # Not the in-flight answer: one fetched after the question was asked.
    assert await later == ("a", 1)
    assert source.batches == [["a"], ["a"]]


async def test_an_error_for_one_key_refuses_that_key_alone() -> None:
    source = Source()
    lookup: BatchedLookup[str, tuple[str, int]] = BatchedLookup(source.fetch, max_waiting=100)
    good, bad = asyncio.create_task(lookup.get("good")), asyncio.create_task(lookup.get("bad"))
    await until(lambda: source.release)
    source.release[0].set()
    assert await good == ("good", 0)
    with pytest.raises(ValueError, match="bad"):
        await bad


async def test_a_failed_fetch_fails_its_batch_and_the_next_batch_runs() -> None:
    calls: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, int | Exception]:
        calls.append(keys)
        if len(calls) == 1:
            await asyncio.sleep(0)
            raise ConnectionError("down")
        return {key: len(key) for key in keys}

    lookup: BatchedLookup[str, int] = BatchedLookup(fetch, max_waiting=100)
    first = asyncio.create_task(lookup.get("x"))
    await until(lambda: calls)
    second = asyncio.create_task(lookup.get("yy"))
    with pytest.raises(ConnectionError):
        await first
    assert await second == 2


async def test_past_the_bound_a_question_is_refused_at_once() -> None:
    source = Source()
    lookup: BatchedLookup[str, tuple[str, int]] = BatchedLookup(source.fetch, max_waiting=2)
    asks = [asyncio.create_task(lookup.get(key)) for key in ("a", "b")]
    await until(lambda: source.release)
    with pytest.raises(Busy):
        await lookup.get("c")
    assert lookup.refused == 1
    source.release[0].set()
    assert len(await asyncio.gather(*asks)) == 2
    # Room again once answered.
    third = asyncio.create_task(lookup.get("c"))
    await until(lambda: len(source.release) == 2)
    source.release[1].set()
    assert await third == ("c", 0)


async def test_a_caller_that_goes_away_does_not_disturb_the_others() -> None:
    source = Source()
    lookup: BatchedLookup[str, tuple[str, int]] = BatchedLookup(source.fetch, max_waiting=100)
    gone, stays = asyncio.create_task(lookup.get("a")), asyncio.create_task(lookup.get("a"))
    await until(lambda: source.release)
    gone.cancel()
    source.release[0].set()
    assert await stays == ("a", 0)
    assert gone.cancelled()
    assert lookup.waiting == 0
