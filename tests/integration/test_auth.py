"""Tokens at connect: who the connection is, and every way a token is refused (close 1008)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import orjson
import psycopg
import pytest
from psycopg import sql
from websockets.exceptions import ConnectionClosed

from tests.conftest import JWT_SECRET, make_settings
from tests.support.client import realtime_client
from tests.support.server import ServerThread


def token(secret: str = JWT_SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    body: dict[str, Any] = {"sub": "user-1", "exp": int(time.time()) + 600, "role": "authenticated"}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, algorithm=algorithm)


async def test_valid_token_attaches_user_id_and_claims(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    async with realtime_client(f"{server.ws_url}?token={token(sub='alice', team='blue')}") as client:
        await client.subscribe(f"table:public.{table}")
        [subscriber] = [s for s in server.services.hub.subscribers() if s.channels]
        assert subscriber.principal.user_id == "alice"
        assert subscriber.principal.claims["team"] == "blue"
        assert subscriber.principal.authenticated
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('seen')").format(sql.Identifier(table)))
        [change] = await client.broadcasts(1)
    assert change["payload"]["record"]["name"] == "seen"


async def test_connection_without_token_is_anonymous(server: ServerThread, table: str) -> None:
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}")
        [subscriber] = [s for s in server.services.hub.subscribers() if s.channels]
    assert subscriber.principal.user_id is None
    assert not subscriber.principal.authenticated


def _none_algorithm_token() -> str:
    header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    payload = jwt.utils.base64url_encode(b'{"sub":"mallory","exp":9999999999}').decode()
    return f"{header}.{payload}."


@pytest.mark.parametrize(
    ("bad_token", "words"),
    [
        (token(exp=int(time.time()) - 10), "expired"),
        (token(nbf=int(time.time()) + 600), "not valid yet"),
        (token(secret="some-other-secret-of-sufficient-length"), "signature"),
        (token(algorithm="HS512"), "algorithm"),
        (_none_algorithm_token(), "algorithm"),
        (token(exp=None), "exp"),
        ("not.a.jwt", "malformed"),
    ],
)
async def test_bad_tokens_get_an_error_and_close_1008(
    server: ServerThread, bad_token: str, words: str
) -> None:
    async with realtime_client(f"{server.ws_url}?token={bad_token}") as client:
        error = await client.receive()
        assert error["type"] == "error"
        assert words in error["error"]
        assert bad_token not in error["error"]
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


async def test_without_jwt_secret_tokens_are_refused_but_anonymous_works(database_url: str) -> None:
    with ServerThread(make_settings(database_url, jwt_secret=None)) as server:
        async with realtime_client(f"{server.ws_url}?token={token()}") as client:
            error = await client.receive()
            assert "JWT_SECRET" in error["error"]
            with pytest.raises(ConnectionClosed) as closed:
                await client.receive()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008
        async with realtime_client(server.ws_url) as client:
            await client.send(type="unsubscribe", channel="table:public.nothing")
            assert (await client.receive())["type"] == "error"


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_tokens_never_reach_the_logs(
    database_url: str, capfd: pytest.CaptureFixture[str], log_format: str
) -> None:
    secret_token = token(sub="log-check")
    header_token = token(sub="log-check", via="header")
    refreshed_token = token(sub="log-check", via="access_token")
    refused_token = token(sub="someone-else", via="access_token")
    tokens = [secret_token, header_token, refreshed_token, refused_token]
    settings = make_settings(database_url, log_level="info", log_format=log_format)
    with ServerThread(settings) as server:
        async with realtime_client(f"{server.ws_url}?token={secret_token}") as client:
            await client.send(type="unsubscribe", channel="table:public.nothing")
            await client.receive()
        async with realtime_client(f"{server.ws_url}?token=garbage-{secret_token}") as client:
            await client.receive()
        # The Authorization header, accepted and refused.
        bearer = {"Authorization": f"Bearer {header_token}"}
        async with realtime_client(server.ws_url, additional_headers=bearer) as client:
            # In-band refreshes: accepted, refused (another sub), and malformed.
            await client.send(type="access_token", token=refreshed_token, ref=1)
            assert (await client.receive())["type"] == "ack"
            await client.send(type="access_token", token=refused_token, ref=2)
            assert (await client.receive())["type"] == "error"
            await client.send(type="access_token", token=f"garbage-{refreshed_token}", ref=3)
            assert (await client.receive())["type"] == "error"
        bearer = {"Authorization": f"Bearer garbage-{header_token}"}
        async with realtime_client(server.ws_url, additional_headers=bearer) as client:
            await client.receive()
        async with realtime_client(
            f"{server.ws_url}?token={secret_token}", additional_headers=bearer
        ) as client:
            await client.receive()
    output = capfd.readouterr()
    logged = output.out + output.err
    assert "/realtime?token=[redacted]" in logged  # uvicorn did log the connection, and it was scrubbed
    if log_format == "json":
        # Every line the service logged is one JSON object; uvicorn's connection lines among them.
        lines = [orjson.loads(line) for line in output.err.splitlines() if line.startswith("{")]
        assert any("/realtime?token=[redacted]" in line["message"] for line in lines)
        assert {"time", "level", "logger", "message"} <= set(lines[0])
        assert not [line for line in output.err.splitlines() if " level=INFO logger=uvicorn" in line]
    for leaked in tokens:
        assert leaked not in logged
        assert leaked.split(".")[2] not in logged
