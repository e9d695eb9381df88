"""The front door: asymmetric tokens and JWKS, the Authorization header, token expiry and in-band refresh,
and the per-connection limits (channels, message rate, connections per user and address, origins)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from websockets.exceptions import ConnectionClosed

from tests.conftest import make_settings
from tests.integration.test_auth import token
from tests.support.client import RECEIVE_TIMEOUT, RealtimeClient, realtime_client
from tests.support.jwks import JwksServer, SigningKey, unreachable_url
from tests.support.server import ServerThread


async def refused(url: str, **options: Any) -> tuple[dict[str, Any], int]:
    """Connect, expecting a refusal: the error the server sent first, and the close code that followed."""
    async with realtime_client(url, **options) as client:
        error = await client.receive()
        assert error["type"] == "error", error
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive()
    assert closed.value.rcvd is not None
    return error, closed.value.rcvd.code


async def closed_after(client: RealtimeClient) -> tuple[list[dict[str, Any]], int]:
    """Every message until the server closes the connection, and the close code."""
    messages = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            messages.append(await client.receive())
    assert closed.value.rcvd is not None
    return messages, closed.value.rcvd.code


async def insert(db: psycopg.AsyncConnection, table: str, name: str) -> None:
    await db.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier(table)), (name,))


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (bounded, polling: the server's state is in another thread) until `condition` holds."""
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def until_released(server: ServerThread, address: str = "127.0.0.1") -> None:
    """Wait until the server has closed every connection and released every slot of `address`."""
    await eventually(
        lambda: (
            not server.services.limits.connections_from(address) and not server.services.hub.connection_count
        )
    )


def the_subscriber(server: ServerThread) -> Any:
    [subscriber] = server.services.hub.subscribers()
    return subscriber


# --- asymmetric tokens and JWKS -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.generate("key-2026-01", "RS256")


@pytest.fixture
def jwks(rsa_key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer([rsa_key.jwk()]) as running:
        yield running


async def test_jwks_tokens_are_accepted_and_a_rotated_key_is_fetched(
    database_url: str, jwks: JwksServer, rsa_key: SigningKey, table: str
) -> None:
    settings = make_settings(
        database_url, jwt_algorithms="RS256", jwt_jwks_url=jwks.url, jwt_jwks_cooldown_seconds=0
    )
    with ServerThread(settings) as server:
        async with realtime_client(f"{server.ws_url}?token={rsa_key.sign(sub='jwks-user')}") as client:
            await client.subscribe(f"table:public.{table}")
            assert the_subscriber(server).principal.user_id == "jwks-user"
        assert jwks.requests == 1
        rotated = SigningKey.generate("key-2026-02", "RS256")
        jwks.keys = [rsa_key.jwk(), rotated.jwk()]
        async with realtime_client(f"{server.ws_url}?token={rotated.sign(sub='rotated-user')}") as client:
            await client.subscribe(f"table:public.{table}")
            assert the_subscriber(server).principal.user_id == "rotated-user"
        assert jwks.requests == 2


async def test_jwks_unknown_kid_is_refused(database_url: str, jwks: JwksServer, rsa_key: SigningKey) -> None:
    settings = make_settings(
        database_url, jwt_algorithms="RS256", jwt_jwks_url=jwks.url, jwt_jwks_cooldown_seconds=0
    )
    stranger = SigningKey("never-published", "RS256", rsa_key.private_key)
    with ServerThread(settings) as server:
        bad = stranger.sign()
        error, code = await refused(f"{server.ws_url}?token={bad}")
    assert "never-published" in error["error"] and "not in the JWKS" in error["error"]
    assert bad not in error["error"]
    assert code == 1008


async def test_unreachable_jwks_is_refused_and_the_server_keeps_serving(
    database_url: str, rsa_key: SigningKey, table: str
) -> None:
    settings = make_settings(database_url, jwt_algorithms="RS256,HS256", jwt_jwks_url=unreachable_url())
    with ServerThread(settings) as server:
        for _ in range(2):
            error, code = await refused(f"{server.ws_url}?token={rsa_key.sign()}")
            assert "JWKS" in error["error"] and "could not be fetched" in error["error"]
            assert code == 1008
        # HMAC tokens and anonymous connections are unaffected, and the service is healthy.
        async with realtime_client(f"{server.ws_url}?token={token(sub='hmac-user')}") as client:
            await client.subscribe(f"table:public.{table}")
        async with realtime_client(server.ws_url) as client:
            await client.subscribe(f"table:public.{table}")
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            assert (await http.get("/healthz")).status_code == 200


async def test_public_key_tokens(database_url: str, table: str) -> None:
    key = SigningKey.generate("ignored", "ES256")
    settings = make_settings(database_url, jwt_algorithms="ES256", jwt_public_key=key.public_pem())
    with ServerThread(settings) as server:
        async with realtime_client(f"{server.ws_url}?token={key.sign(sub='ec-user', kid=None)}") as client:
            await client.subscribe(f"table:public.{table}")
            assert the_subscriber(server).principal.user_id == "ec-user"
        # The HMAC secret is configured too, but HS256 is not on this server's allow-list.
        error, code = await refused(f"{server.ws_url}?token={token()}")
    assert "not allowed" in error["error"] and code == 1008


async def test_audience_and_issuer(database_url: str, table: str) -> None:
    settings = make_settings(database_url, jwt_audience="realtime", jwt_issuer="https://auth.example")
    with ServerThread(settings) as server:
        good = token(aud="realtime", iss="https://auth.example")
        async with realtime_client(f"{server.ws_url}?token={good}") as client:
            await client.subscribe(f"table:public.{table}")
        for bad, words in [
            (token(aud="other", iss="https://auth.example"), "audience"),
            (token(aud="realtime", iss="https://evil.example"), "issuer"),
            (token(iss="https://auth.example"), "'aud'"),
        ]:
            error, code = await refused(f"{server.ws_url}?token={bad}")
            assert words in error["error"] and code == 1008


# --- the Authorization header ---------------------------------------------------------------------------


async def test_bearer_header_authenticates(server: ServerThread, table: str) -> None:
    headers = {"Authorization": f"Bearer {token(sub='header-user')}"}
    async with realtime_client(server.ws_url, additional_headers=headers) as client:
        await client.subscribe(f"table:public.{table}")
        [subscriber] = [s for s in server.services.hub.subscribers() if s.channels]
        assert subscriber.principal.user_id == "header-user"
        assert subscriber.principal.authenticated


@pytest.mark.parametrize(
    ("header", "query", "words"),
    [
        (f"Bearer {token(sub='a')}", token(sub="b"), "more than one token"),
        (f"Basic {token()}", None, "Bearer"),
        ("Bearer", None, "Bearer"),
        (f"Bearer {token(exp=int(time.time()) - 10)}", None, "expired"),
        (f"Bearer {token(secret='another-secret-entirely-of-sufficient-length')}", None, "signature"),
    ],
)
async def test_bad_authorization_headers_are_refused(
    server: ServerThread, header: str, query: str | None, words: str
) -> None:
    url = server.ws_url if query is None else f"{server.ws_url}?token={query}"
    error, code = await refused(url, additional_headers={"Authorization": header})
    assert words in error["error"]
    for part in (header.partition(" ")[2], query):
        if part:
            assert part not in error["error"]
    assert code == 1008


# --- token expiry and the in-band refresh ---------------------------------------------------------------


async def test_an_expiring_token_ends_the_connection_with_token_expired(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    short = token(sub="short-lived", exp=int(time.time()) + 2)
    async with realtime_client(f"{server.ws_url}?token={short}") as client:
        await client.subscribe(f"table:public.{table}")
        await insert(db, table, "while-valid")
        [change] = await client.broadcasts(1)
        assert change["payload"]["record"]["name"] == "while-valid"
        messages, code = await closed_after(client)
    assert [m.get("code") for m in messages] == ["token_expired"]
    assert "expired" in messages[0]["error"] and "access_token" in messages[0]["error"]
    assert code == 1008


async def test_access_token_refresh_keeps_the_connection_until_the_new_token_expires(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    start = int(time.time())
    first = token(sub="refresher", exp=start + 2)
    async with realtime_client(f"{server.ws_url}?token={first}") as client:
        await client.subscribe(f"table:public.{table}")
        await client.send(type="access_token", token=token(sub="refresher", exp=start + 7), ref="t1")
        assert await client.receive() == {"type": "ack", "ref": "t1"}
        assert the_subscriber(server).principal.claims["exp"] == start + 7
        # Let the first token's expiry pass; the sentinel proves nothing (no token_expired) came before it.
        await asyncio.sleep(max(0.0, start + 2.5 - time.time()))
        await insert(db, table, "sentinel")
        [change] = await client.broadcasts(1)
        assert change["payload"]["record"]["name"] == "sentinel"
        # The refreshed token expires in its turn.
        messages, code = await closed_after(client)
    assert [m.get("code") for m in messages] == ["token_expired"]
    assert code == 1008


async def test_refresh_that_changes_claims_keeps_delivering_each_change_once(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    async with realtime_client(f"{server.ws_url}?token={token(sub='carol', team='blue')}") as client:
        await client.subscribe(f"table:public.{table}")
        await insert(db, table, "before")
        assert [c["payload"]["record"]["name"] for c in await client.broadcasts(1)] == ["before"]
        await client.send(type="access_token", token=token(sub="carol", team="green"), ref=9)
        assert await client.receive() == {"type": "ack", "ref": 9}
        assert the_subscriber(server).principal.claims["team"] == "green"
        for name in ("after-1", "after-2", "sentinel"):
            await insert(db, table, name)
        changes = await client.until_broadcast(lambda m: m["payload"]["record"]["name"] == "sentinel")
    assert [c["payload"]["record"]["name"] for c in changes] == ["after-1", "after-2", "sentinel"]
    ids = [c["id"] for c in changes]
    assert ids == sorted(ids) and len(set(ids)) == 3


@pytest.mark.parametrize(
    ("new_token", "words"),
    [
        (token(sub="mallory"), "another subject"),
        (token(sub="dave", exp=int(time.time()) - 10), "expired"),
        (token(sub="dave", secret="another-secret-entirely-of-sufficient-length"), "signature"),
        (token(sub="dave", role="postgres"), "role"),
        ("not-a-token", "malformed"),
    ],
)
async def test_refused_refresh_keeps_the_old_principal(
    server: ServerThread, db: psycopg.AsyncConnection, table: str, new_token: str, words: str
) -> None:
    original = token(sub="dave", team="red")
    async with realtime_client(f"{server.ws_url}?token={original}") as client:
        await client.subscribe(f"table:public.{table}")
        await client.send(type="access_token", token=new_token, ref="r")
        error = await client.receive()
        assert error["type"] == "error" and error["ref"] == "r"
        assert words in error["error"] and new_token not in error["error"]
        principal = the_subscriber(server).principal
        assert (principal.user_id, principal.claims["team"]) == ("dave", "red")
        await insert(db, table, "still-open")
        [change] = await client.broadcasts(1)
    assert change["payload"]["record"]["name"] == "still-open"


async def test_anonymous_connections_cannot_take_a_token_in_band(server: ServerThread, table: str) -> None:
    async with realtime_client(server.ws_url) as client:
        for new_token in (token(sub="eve"), token(sub=None)):  # with a subject, and without one
            await client.send(type="access_token", token=new_token, ref=1)
            error = await client.receive()
            assert error["type"] == "error" and error["ref"] == 1
            assert "no token to replace" in error["error"]
        await client.subscribe(f"table:public.{table}")
        assert not the_subscriber(server).principal.authenticated


async def test_malformed_access_token_message(server: ServerThread) -> None:
    async with realtime_client(f"{server.ws_url}?token={token()}") as client:
        await client.send(type="access_token", ref="m")
        error = await client.receive()
    assert error["type"] == "error" and error["ref"] == "m" and "token" in error["error"]


# --- limits ---------------------------------------------------------------------------------------------


async def make_tables(db: psycopg.AsyncConnection, count: int) -> list[str]:
    names = []
    for _ in range(count):
        name = f"limits_{uuid.uuid4().hex[:10]}"
        await db.execute(
            sql.SQL("CREATE TABLE public.{} (id serial, name text)").format(sql.Identifier(name))
        )
        await db.execute("SELECT enable_realtime('public', %s)", (name,))
        names.append(f"table:public.{name}")
    return names


async def test_channels_per_connection(database_url: str, db: psycopg.AsyncConnection) -> None:
    first, second, third = await make_tables(db, 3)
    with ServerThread(make_settings(database_url, realtime_max_channels_per_connection=2)) as server:
        async with realtime_client(server.ws_url) as client:
            await client.subscribe(first)
            await client.subscribe(second)
            await client.send(type="subscribe", channel=third, ref="c3")
            error = await client.receive()
            assert error["type"] == "error" and error["code"] == "too_many_channels"
            assert (error["channel"], error["ref"]) == (third, "c3") and "at most 2" in error["error"]
            await client.subscribe(first)  # already subscribed: does not count
            await client.send(type="unsubscribe", channel=second)
            assert (await client.receive())["type"] == "ack"
            await client.subscribe(third)
            assert the_subscriber(server).channels == {first, third}


async def test_messages_over_the_rate_are_dropped_with_rate_limited(database_url: str, table: str) -> None:
    with ServerThread(make_settings(database_url, realtime_max_messages_per_second=5)) as server:
        async with realtime_client(server.ws_url) as client:
            for number in range(20):
                await client.send(type="unsubscribe", channel="table:public.nothing", ref=number)
            replies = [await client.receive() for _ in range(20)]
            limited = [r for r in replies if r.get("code") == "rate_limited"]
            answered = [r for r in replies if r.get("code") != "rate_limited"]
            assert limited and "at most 5 messages per second" in limited[0]["error"]
            assert "ref" not in limited[0]  # dropped unread
            assert len(answered) >= 5 and all("not subscribed" in r["error"] for r in answered)
            # The connection stays open: once the bucket refills, requests are answered again.
            async with asyncio.timeout(RECEIVE_TIMEOUT):
                while True:
                    await client.send(type="subscribe", channel=f"table:public.{table}")
                    reply = await client.receive()
                    if reply["type"] == "ack":
                        break
                    assert reply["code"] == "rate_limited"
                    await asyncio.sleep(0.1)


async def test_a_flood_of_messages_is_closed_with_1008(database_url: str) -> None:
    with ServerThread(make_settings(database_url, realtime_max_messages_per_second=2)) as server:
        async with realtime_client(server.ws_url) as client:
            for _ in range(200):
                await client.send(type="unsubscribe", channel="table:public.nothing")
            messages, code = await closed_after(client)
    assert code == 1008
    assert messages[-1]["code"] == "rate_limited" and "closed" in messages[-1]["error"]
    assert sum(m.get("code") == "rate_limited" for m in messages) >= 10


async def test_connections_per_user(database_url: str) -> None:
    with ServerThread(make_settings(database_url, realtime_max_connections_per_user=2)) as server:
        async with realtime_client(f"{server.ws_url}?token={token(sub='alice')}") as one:
            async with realtime_client(f"{server.ws_url}?token={token(sub='alice')}"):
                error, code = await refused(f"{server.ws_url}?token={token(sub='alice')}")
                assert "too many connections for this user" in error["error"] and code == 1008
                # Another user, and anonymous connections, are not affected.
                async with realtime_client(f"{server.ws_url}?token={token(sub='bob')}") as bob:
                    await bob.send(type="unsubscribe", channel="table:public.nothing")
                    assert "not subscribed" in (await bob.receive())["error"]
            await eventually(lambda: server.services.limits.connections_of("alice") == 1)
            async with realtime_client(f"{server.ws_url}?token={token(sub='alice')}") as again:
                await again.send(type="unsubscribe", channel="table:public.nothing")
                assert "not subscribed" in (await again.receive())["error"]
            await one.send(type="unsubscribe", channel="table:public.nothing")
            assert "not subscribed" in (await one.receive())["error"]


async def test_connections_per_address(database_url: str) -> None:
    with ServerThread(make_settings(database_url, realtime_max_connections_per_address=2)) as server:
        async with realtime_client(server.ws_url), realtime_client(f"{server.ws_url}?token={token()}"):
            error, code = await refused(server.ws_url)
            assert "too many connections from this address" in error["error"] and code == 1008
            # uvicorn takes X-Forwarded-For from a trusted proxy (127.0.0.1): another client address.
            forwarded = {"X-Forwarded-For": "203.0.113.7"}
            async with realtime_client(server.ws_url, additional_headers=forwarded) as other:
                await other.send(type="unsubscribe", channel="table:public.nothing")
                assert "not subscribed" in (await other.receive())["error"]
                assert server.services.limits.connections_from("203.0.113.7") == 1
        await until_released(server)


async def test_refused_connections_hold_no_slot(database_url: str) -> None:
    settings = make_settings(
        database_url,
        realtime_max_connections_per_address=1,
        realtime_max_connections_per_user=1,
        realtime_allowed_origins="https://app.example",
    )
    with ServerThread(settings) as server:
        for attempt in range(3):
            await refused(f"{server.ws_url}?token=garbage-{attempt}")
            await refused(f"{server.ws_url}?token={token(sub='u', exp=int(time.time()) - 5)}")
            await refused(server.ws_url, origin="https://evil.example")
        async with realtime_client(f"{server.ws_url}?token={token(sub='u')}") as client:
            assert server.services.limits.connections_from("127.0.0.1") == 1
            await refused(f"{server.ws_url}?token={token(sub='u')}")  # over both limits
            await refused(server.ws_url)  # over the address limit
            await client.send(type="unsubscribe", channel="table:public.nothing")
            assert "not subscribed" in (await client.receive())["error"]
        await until_released(server)
        async with realtime_client(f"{server.ws_url}?token={token(sub='u')}") as client:
            await client.send(type="unsubscribe", channel="table:public.nothing")
            assert "not subscribed" in (await client.receive())["error"]


async def test_allowed_origins(database_url: str, table: str) -> None:
    settings = make_settings(
        database_url, realtime_allowed_origins="https://app.example, http://localhost:3000"
    )
    with ServerThread(settings) as server:
        for origin in ("https://app.example", "HTTPS://APP.EXAMPLE", "http://localhost:3000", None):
            async with realtime_client(server.ws_url, origin=origin) as client:
                await client.subscribe(f"table:public.{table}")
        for origin in ("https://evil.example", "http://app.example", "null"):
            error, code = await refused(server.ws_url, origin=origin)
            assert "not allowed" in error["error"] and origin in error["error"]
            assert code == 1008


async def test_any_origin_by_default(server: ServerThread, table: str) -> None:
    async with realtime_client(server.ws_url, origin="https://anywhere.example") as client:
        await client.subscribe(f"table:public.{table}")


async def test_a_token_whose_claims_cannot_reach_the_database_is_refused_at_connect(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    # Python reads a 2**64 claim from JSON; it cannot be written back for row-level security checks.
    error, code = await refused(f"{server.ws_url}?token={token(counter=2**64)}")
    assert "claims cannot be used" in error["error"] and code == 1008
    async with realtime_client(f"{server.ws_url}?token={token(counter=2**64 - 1)}") as client:
        await client.subscribe(f"table:public.{table}")
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('sentinel')").format(sql.Identifier(table)))
        [change] = await client.broadcasts(1)
    assert change["payload"]["record"]["name"] == "sentinel"
