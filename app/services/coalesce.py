"""Lookups that many callers ask for at once, answered by one database round trip per batch.

A connect storm asks the same few questions thousands of times a second (is this table realtime, what
may this role see of it, where is "now"). Each caller's question joins the next batch: the one that
starts after it was asked, never one already in flight, so every answer is at least as fresh as asking
alone would have been, and nothing is cached. While a batch is in flight, new questions wait for the
next one, so the batch size follows the load: one query per round trip, whatever the rate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Busy(Exception):
    """More questions are waiting than the bound allows: the caller is refused at once (try again)."""


class BatchedLookup(Generic[K, V]):
    """`get(key)` answered by `fetch(keys)` for every distinct key asked while the previous batch ran.

    `fetch` returns a value (or the exception that refuses that key alone) for each key it was given, or
    raises: then every caller of that batch gets the exception. At most `max_waiting` callers wait at
    once; more are refused with Busy.
    """

    def __init__(
        self, fetch: Callable[[list[K]], Awaitable[dict[K, V | Exception]]], *, max_waiting: int
    ) -> None:
        self._fetch = fetch
        self._max_waiting = max_waiting
        self._next: dict[K, list[asyncio.Future[V]]] = {}
        self._inflight: dict[K, list[asyncio.Future[V]]] = {}
        self._runner: asyncio.Task[None] | None = None
        self.waiting = 0  # callers whose answer is not there yet
        # For /metrics: questions asked, batches fetched (their ratio is what batching saves), refusals.
        self.asked = 0
        self.batches = 0
        self.refused = 0
        self.shared = 0  # questions answered by another caller's fetch of the same key

    async def get(self, key: K) -> V:
        if self.waiting >= self._max_waiting:
            self.refused += 1
            raise Busy(f"{self.waiting} lookups are waiting already")
        answer: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        waiters = self._next.setdefault(key, [])
        if waiters:
            self.shared += 1
        waiters.append(answer)
        self.asked += 1
        self.waiting += 1
        if self._runner is None:
            # Started, not run: every question asked in this turn of the loop joins the first batch.
            self._runner = asyncio.get_running_loop().create_task(self._run())
        try:
            return await answer
        finally:
            self.waiting -= 1

    async def _run(self) -> None:
        try:
            while self._next:
                batch = self._inflight = self._next
                self._next = {}
                self.batches += 1
                try:
                    values = await self._fetch(list(batch))
                except Exception as error:  # every caller of the batch gets it, as if it had asked alone
                    for answers in batch.values():
                        for answer in answers:
                            if not answer.done():
                                answer.set_exception(error)
                    continue
                for key, answers in batch.items():
                    value = values[key]
                    for answer in answers:
                        if answer.done():  # a caller that went away meanwhile (cancelled)
                            continue
                        if isinstance(value, Exception):
                            answer.set_exception(value)
                        else:
                            answer.set_result(value)
            self._inflight = {}
        finally:
            # Cancelled (the service is stopping): nobody is left waiting for an answer that never comes.
            for answers in (*self._inflight.values(), *self._next.values()):
                for answer in answers:
                    answer.cancel()
            self._inflight, self._next = {}, {}
            self._runner = None


async def each_alone(keys: Sequence[K], fetch_one: Callable[[K], Awaitable[V]]) -> dict[K, V | Exception]:
    """Every key fetched on its own, at once: its value, or the exception that refused that key alone (as
    a `fetch` for BatchedLookup). Anything but an Exception (a cancellation) is raised."""
    results = await asyncio.gather(*(fetch_one(key) for key in keys), return_exceptions=True)
    answers: dict[K, V | Exception] = {}
    for key, result in zip(keys, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
        answers[key] = result
    return answers
