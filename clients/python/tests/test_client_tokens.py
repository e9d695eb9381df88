"""Tokens against a real server: refreshed in band before `exp`, or a reconnect with a fresh one after
the server's token_expired close, without losing a change; a fixed token that expires ends the streams."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import psycopg
import pytest
from psycopg import sql

from client_test_support import (
    WAIT,
    Collector,
    assert_exactly_the_table,
    make_client,
    table_rows,
    writing,
)
from fluxbase_realtime_client import Change, TokenExpiredError
from tests.conftest import JWT_SECRET
from tests.support.server import ServerThread

LIFETIME = 2  # seconds; `exp` is whole seconds, so a token lives 1-2 s


def _token(lifetime: int = LIFETIME, **claims: Any) -> str:
    body = {"sub": "user-1", "role": "authenticated", "exp": int(time.time()) + lifetime, **claims}
    return jwt.encode(body, JWT_SECRET, algorithm="HS256")


class TokenFunction:
    """An async token function that counts its calls and can be waited on."""

    def __init__(self) -> None:
        self.calls = 0
        self._called = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        self._called.set()
        return _token()

    async def called(self, times: int) -> None:
        async with asyncio.timeout(WAIT):
            while self.calls < times:
                self._called.clear()
                await self._called.wait()


async def _insert(db: psycopg.AsyncConnection, table: str, name: str) -> None:
    await db.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier(table)), (name,))


async def test_the_token_is_refreshed_in_band_and_the_connection_outlives_it(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    tokens = TokenFunction()
    async with make_client(server.ws_url, token=tokens, refresh_margin=30) as client:
        stream = client.changes(f"table:public.{table}")
        await stream.subscribed()
        await tokens.called(4)  # three refreshes: well past the first token's expiry
        await _insert(db, table, "still here")
        async with asyncio.timeout(WAIT):
            change = await anext(stream)
        assert isinstance(change, Change) and (change.record or {})["name"] == "still here"
        assert client.connects == 1  # the server never closed it for expiry


class CachingTokenFunction:
    """Hands back its current token until it has less than `renew_within` seconds left, as token
    providers that cache do: the client's first refresh attempts get no fresher token."""

    def __init__(self, lifetime: int = 3, renew_within: float = 1.2) -> None:
        self.lifetime, self.renew_within = lifetime, renew_within
        self.minted: list[str] = []
        self.calls = 0
        self._minted = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        current = self.minted[-1] if self.minted else None
        left = jwt.decode(current, options={"verify_signature": False})["exp"] - time.time() if current else 0
        if left < self.renew_within:
            self.minted.append(_token(self.lifetime))
            self._minted.set()
        return self.minted[-1]

    async def minted_at_least(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.minted) < count:
                self._minted.clear()
                await self._minted.wait()


async def test_a_token_function_that_caches_is_asked_again_until_it_hands_out_a_fresher_token(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    tokens = CachingTokenFunction()
    async with make_client(server.ws_url, token=tokens, refresh_margin=30) as client:
        stream = client.changes(f"table:public.{table}")
        await stream.subscribed()
        await tokens.minted_at_least(3)  # two in-band refreshes, each after asking more than once
        await _insert(db, table, "still here")
        async with asyncio.timeout(WAIT):
            change = await anext(stream)
        assert isinstance(change, Change) and (change.record or {})["name"] == "still here"
        assert tokens.calls > len(tokens.minted)  # some calls got the cached token back
        assert client.connects == 1


async def test_after_an_expiry_close_the_client_reconnects_with_a_fresh_token_and_loses_nothing(
    server: ServerThread, database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    tokens = TokenFunction()
    collector = Collector()
    async with make_client(server.ws_url, token=tokens, refresh_in_band=False) as client:
        stream = client.changes(f"table:public.{table}")
        await stream.subscribed()
        consuming = asyncio.create_task(collector.run(stream))
        async with writing(database_url, table) as writer:
            await tokens.called(3)  # the first two tokens expired and were replaced by reconnecting
            await collector.more_than(len(collector.changes) + 10)
            writer.stop()
            async with asyncio.timeout(WAIT):
                await consuming
        assert client.connects >= 3
    assert_exactly_the_table(collector.changes, await table_rows(db, table))


async def test_a_fixed_token_that_expires_ends_the_streams_with_token_expired(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    async with make_client(server.ws_url, token=_token()) as client:
        stream = client.changes(f"table:public.{table}")
        await stream.subscribed()
        await _insert(db, table, "before expiry")
        async with asyncio.timeout(WAIT):
            first = await anext(stream)
            assert isinstance(first, Change)
            with pytest.raises(TokenExpiredError):
                await anext(stream)
