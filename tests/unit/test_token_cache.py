"""Verified tokens remembered by hash: bounded, never past the token's expiry or the cache's TTL, and
only ever for the exact token that was verified."""

from __future__ import annotations

import time

import jwt
import pytest

from app.services.auth import AuthError, TokenVerifier
from app.services.token_cache import VerifiedTokens

SECRET = "unit-test-secret-that-is-long-enough-for-hs512-keys-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lasts_until_its_expiry_or_the_ttl_whichever_comes_first() -> None:
    clock = Clock()
    cache: VerifiedTokens[str] = VerifiedTokens(size=10, ttl=60, clock=clock)
    cache.put("short", "a", valid_until=1010)
    cache.put("long", "b", valid_until=5000)
    cache.put("no-exp", "c", valid_until=None)
    clock.now = 1009
    assert (cache.get("short"), cache.get("long"), cache.get("no-exp")) == ("a", "b", "c")
    clock.now = 1010
    assert cache.get("short") is None  # its token expired
    clock.now = 1060
    assert (cache.get("long"), cache.get("no-exp")) == (None, None)  # the TTL
    assert len(cache) == 0


def test_the_least_recently_used_entry_goes_first_and_the_token_is_not_kept() -> None:
    cache: VerifiedTokens[str] = VerifiedTokens(size=2, ttl=60)
    cache.put("token-one", "1", None)
    cache.put("token-two", "2", None)
    assert cache.get("token-one") == "1"  # used: "token-two" is now the oldest
    cache.put("token-three", "3", None)
    assert (cache.get("token-one"), cache.get("token-two"), cache.get("token-three")) == ("1", None, "3")
    assert not any("token" in repr(key) for key in cache._entries)  # digests only


def test_size_zero_turns_it_off() -> None:
    cache: VerifiedTokens[str] = VerifiedTokens(size=0, ttl=60)
    cache.put("t", "x", None)
    assert cache.get("t") is None


async def test_the_verifier_checks_a_token_once_then_remembers_it() -> None:
    verifier = TokenVerifier(SECRET, ["HS256"], cache_size=10, cache_seconds=60)
    tok = jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    first = await verifier.verify(tok)
    again = await verifier.verify(tok)
    assert again is first and verifier.verified.hits == 1
    # Another token is checked on its own, even for the same subject; a forged one is still refused.
    other = jwt.encode({"sub": "u1", "exp": int(time.time()) + 61}, SECRET, algorithm="HS256")
    assert (await verifier.verify(other)) is not first
    forged = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthError):
        await verifier.verify(forged)


async def test_a_remembered_token_is_refused_once_it_expires() -> None:
    verifier = TokenVerifier(SECRET, ["HS256"], cache_size=10, cache_seconds=60)
    clock = Clock()
    clock.now = time.time()
    verifier.verified = VerifiedTokens(size=10, ttl=60, clock=clock)
    tok = jwt.encode({"sub": "u1", "exp": int(clock.now) + 2}, SECRET, algorithm="HS256")
    await verifier.verify(tok)
    clock.now += 3  # past the token's exp: forgotten, so the next verify checks the token again
    assert verifier.verified.get(tok) is None
