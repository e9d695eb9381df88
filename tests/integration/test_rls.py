"""Row-level security per subscriber, on real tables with real policies.

Every case asserts exactly what each subscriber received, and that the others received nothing: each
subscriber's stream is read up to a sentinel change only it can see, so an idle stream is told apart from
a slow one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import psycopg
import pytest
from psycopg import sql
from websockets.exceptions import ConnectionClosed

from tests.conftest import JWT_SECRET
from tests.support.client import RealtimeClient, realtime_client
from tests.support.modes import BOTH_MODES
from tests.support.server import ServerThread

ALICE, BOB, CAROL = (str(uuid.UUID(int=n)) for n in (1, 2, 3))
SUB = "nullif(current_setting('request.jwt.claim.sub', true), '')::uuid"


def token(sub: str | None, role: str = "authenticated", **claims: Any) -> str:
    body: dict[str, Any] = {"exp": int(time.time()) + 600, "role": role, **claims}
    if sub is not None:
        body["sub"] = sub
    return jwt.encode(body, JWT_SECRET, algorithm="HS256")


@pytest.fixture
async def docs(db: psycopg.AsyncConnection) -> AsyncIterator[str]:
    """`docs` with RLS: owners see their rows, team members see their team's rows (through a join
    table), nobody sees archived rows (restrictive), anon sees public rows; `secret` is not granted."""
    name = f"docs_{uuid.uuid4().hex[:8]}"
    members = f"{name}_members"
    d, m = sql.Identifier(name), sql.Identifier(members)
    statements = [
        sql.SQL("CREATE TABLE {} (team_id int, user_id uuid)").format(m),
        sql.SQL(
            "CREATE TABLE {} (id serial PRIMARY KEY, owner uuid, team_id int, title text, secret text,"
            " archived boolean NOT NULL DEFAULT false, public boolean NOT NULL DEFAULT false)"
        ).format(d),
        sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(d),
        sql.SQL("CREATE POLICY own ON {} FOR SELECT TO authenticated USING (owner = " + SUB + ")").format(d),
        sql.SQL(
            "CREATE POLICY team ON {} FOR SELECT TO authenticated USING (EXISTS ("
            "SELECT 1 FROM {} mm WHERE mm.team_id = {}.team_id AND mm.user_id = " + SUB + "))"
        ).format(d, m, d),
        sql.SQL(
            "CREATE POLICY live ON {} AS RESTRICTIVE FOR SELECT TO authenticated USING (NOT archived)"
        ).format(d),
        sql.SQL("CREATE POLICY everyone ON {} FOR SELECT TO anon USING (public)").format(d),
        sql.SQL(
            "GRANT SELECT (id, owner, team_id, title, archived, public) ON {} TO anon, authenticated"
        ).format(d),
        sql.SQL("GRANT SELECT ON {} TO authenticated, service_role").format(m),
        sql.SQL("GRANT SELECT ON {} TO service_role").format(d),
        sql.SQL("INSERT INTO {} VALUES (1, %s), (2, %s)").format(m),
    ]
    for statement in statements:
        await db.execute(statement, (CAROL, ALICE) if "VALUES (1" in statement.as_string(db) else None)
    await db.execute("SELECT enable_realtime('public', %s)", (name,))
    yield name


async def _insert(db: psycopg.AsyncConnection, table: str, **values: Any) -> None:
    columns = sql.SQL(", ").join(sql.Identifier(k) for k in values)
    await db.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table), columns, sql.SQL(", ").join(sql.Placeholder() * len(values))
        ),
        tuple(values.values()),
    )


async def _logged(db: psycopg.AsyncConnection, table: str, count: int) -> None:
    """Until the table's first `count` changes are in the change log: in logical mode a change reaches it a
    moment after its commit, and a subscribe delivers what is logged after it, so a row inserted before
    the test subscribes must be logged first or it arrives as a change (polled; the timeout guards a hang)."""
    statement = (
        "SELECT count(*) FROM fluxbase_realtime.change_log WHERE schema_name = 'public' AND table_name = %s"
    )
    async with asyncio.timeout(15):
        while True:
            row = await (await db.execute(statement, (table,))).fetchone()
            if row is not None and row[0] >= count:
                return
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _subscribed(
    server: ServerThread, table: str, **tokens: str | None
) -> AsyncIterator[dict[str, RealtimeClient]]:
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name, jwt_token in tokens.items():
            url = server.ws_url + (f"?token={jwt_token}" if jwt_token else "")
            clients[name] = await stack.enter_async_context(realtime_client(url))
            await clients[name].subscribe(f"table:public.{table}")
        yield clients


async def _until_sentinel(client: RealtimeClient) -> list[dict[str, Any]]:
    """Everything the client received before its sentinel row (a row titled 'sentinel' it can see)."""
    received = await client.until_broadcast(
        lambda m: (m["payload"].get("record") or {}).get("title") == "sentinel"
    )
    return received[:-1]


def _summary(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [
        (
            m["payload"]["type"],
            (m["payload"].get("record") or m["payload"].get("old_record") or {}).get("title"),
        )
        for m in messages
    ]


async def _sentinels(db: psycopg.AsyncConnection, table: str) -> None:
    """One row each subscriber kind can see: alice's own, bob's own, carol's own, and a public one."""
    for owner in (ALICE, BOB, CAROL):
        await _insert(db, table, owner=owner, title="sentinel")
    await _insert(db, table, public=True, title="sentinel")


@BOTH_MODES
async def test_owner_team_and_restrictive_policies_decide_who_sees_an_insert(
    server: ServerThread, db: psycopg.AsyncConnection, docs: str
) -> None:
    async with _subscribed(
        server, docs, alice=token(ALICE), bob=token(BOB), carol=token(CAROL), anon=None
    ) as clients:
        await _insert(db, docs, owner=ALICE, team_id=9, title="alice's")
        await _insert(db, docs, owner=BOB, team_id=1, title="bob's, team 1")
        await _insert(db, docs, owner=ALICE, team_id=1, title="archived", archived=True)
        await _insert(db, docs, owner=BOB, team_id=2, title="public", public=True)
        await _sentinels(db, docs)
        seen = {name: _summary(await _until_sentinel(c)) for name, c in clients.items()}
    assert seen == {
        "alice": [("INSERT", "alice's"), ("INSERT", "public")],  # alice is in team 2
        "bob": [("INSERT", "bob's, team 1"), ("INSERT", "public")],
        "carol": [("INSERT", "bob's, team 1")],  # team 1; archived rows are hidden from everyone
        "anon": [("INSERT", "public")],
    }


@BOTH_MODES
async def test_columns_the_role_may_not_select_are_never_sent(
    server: ServerThread, db: psycopg.AsyncConnection, docs: str
) -> None:
    async with _subscribed(
        server, docs, alice=token(ALICE), service=token(None, role="service_role")
    ) as clients:
        await _insert(db, docs, owner=ALICE, title="with secret", secret="s3cr3t")
        await _sentinels(db, docs)
        [for_alice] = await _until_sentinel(clients["alice"])
        received_by_service = await _until_sentinel(clients["service"])
    assert "secret" not in for_alice["payload"]["record"]
    assert for_alice["payload"]["record"]["title"] == "with secret"
    assert received_by_service[0]["payload"]["record"]["secret"] == "s3cr3t"  # service_role: everything


@BOTH_MODES
async def test_service_role_sees_every_row(
    server: ServerThread, db: psycopg.AsyncConnection, docs: str
) -> None:
    async with _subscribed(server, docs, service=token(None, role="service_role")) as clients:
        await _insert(db, docs, owner=BOB, title="bob's", archived=True)
        await _insert(db, docs, title="nobody's")
        await _sentinels(db, docs)
        seen = _summary(await _until_sentinel(clients["service"]))
    assert seen == [("INSERT", "bob's"), ("INSERT", "nobody's")]


@BOTH_MODES
async def test_a_token_with_role_anon_acts_as_anon(
    server: ServerThread, db: psycopg.AsyncConnection, docs: str
) -> None:
    async with _subscribed(server, docs, anon_token=token(ALICE, role="anon")) as clients:
        await _insert(db, docs, owner=ALICE, title="alice's")
        await _insert(db, docs, title="public", public=True)
        await _sentinels(db, docs)
        seen = _summary(await _until_sentinel(clients["anon_token"]))
    assert seen == [("INSERT", "public")]


@pytest.mark.parametrize("role", ["postgres", "pg_read_all_data", "no_such_role"])
async def test_a_role_claim_outside_the_allow_list_is_refused_at_connect(
    server: ServerThread, role: str
) -> None:
    async with realtime_client(f"{server.ws_url}?token={token(ALICE, role=role)}") as client:
        error = await client.receive()
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive()
    assert error["type"] == "error" and "not allowed" in error["error"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


@BOTH_MODES
async def test_delete_goes_only_to_those_who_could_see_the_row(
    server: ServerThread, db: psycopg.AsyncConnection, docs: str
) -> None:
    await _insert(db, docs, owner=ALICE, team_id=9, title="doomed", secret="x")
    await _logged(db, docs, 1)
    async with _subscribed(server, docs, alice=token(ALICE), bob=token(BOB), anon=None) as clients:
        await db.execute(sql.SQL("DELETE FROM {} WHERE title = 'doomed'").format(sql.Identifier(docs)))
        await _sentinels(db, docs)
        seen = {name: await _until_sentinel(c) for name, c in clients.items()}
    [deleted] = seen["alice"]
    assert deleted["payload"]["type"] == "DELETE"
    assert deleted["payload"]["old_record"]["title"] == "doomed"
    assert "secret" not in deleted["payload"]["old_record"]
    assert seen["bob"] == [] and seen["anon"] == []


@BOTH_MODES
async def test_an_update_moving_a_row_out_of_view_is_a_key_only_delete(
    server: ServerThread, db: psycopg.AsyncConnection, docs: str
) -> None:
    await _insert(db, docs, owner=ALICE, team_id=9, title="handed over")
    await _logged(db, docs, 1)
    async with _subscribed(server, docs, alice=token(ALICE), bob=token(BOB), carol=token(CAROL)) as clients:
        await db.execute(
            sql.SQL("UPDATE {} SET owner = %s, title = 'now bob''s' WHERE title = 'handed over'").format(
                sql.Identifier(docs)
            ),
            (BOB,),
        )
        await _sentinels(db, docs)
        seen = {name: await _until_sentinel(c) for name, c in clients.items()}
    [left] = seen["alice"]
    assert left["payload"]["type"] == "DELETE"
    assert set(left["payload"]["old_record"]) == {"id"}  # only the key: nothing of the row's new values
    assert "record" not in left["payload"]
    [entered] = seen["bob"]
    assert entered["payload"]["type"] == "INSERT"  # entered bob's view: its old values were never his
    assert entered["payload"]["record"]["title"] == "now bob's"
    assert "old_record" not in entered["payload"]
    assert seen["carol"] == []


@BOTH_MODES
async def test_an_update_within_view_carries_the_old_record(
    server: ServerThread, db: psycopg.AsyncConnection, docs: str
) -> None:
    await _insert(db, docs, owner=ALICE, title="v1")
    await _logged(db, docs, 1)
    async with _subscribed(server, docs, alice=token(ALICE), bob=token(BOB)) as clients:
        await db.execute(
            sql.SQL("UPDATE {} SET title = 'v2' WHERE title = 'v1'").format(sql.Identifier(docs))
        )
        await _sentinels(db, docs)
        [updated] = await _until_sentinel(clients["alice"])
        assert await _until_sentinel(clients["bob"]) == []
    assert updated["payload"]["type"] == "UPDATE"
    assert (updated["payload"]["old_record"]["title"], updated["payload"]["record"]["title"]) == ("v1", "v2")


@BOTH_MODES
async def test_a_failing_policy_affects_only_its_audience(
    server: ServerThread, db: psycopg.AsyncConnection, docs: str
) -> None:
    # Raises for carol only: division by zero when her claims are in effect (by a column, not a constant:
    # PostgreSQL folds a constant 1 / 0 at plan time even in a CASE branch never taken).
    await db.execute(
        sql.SQL(
            "CREATE POLICY fragile ON {} FOR SELECT TO authenticated USING ("
            "CASE WHEN current_setting('request.jwt.claim.sub', true) = {}"
            " THEN 1 / (id - id) = 1 ELSE false END)"
        ).format(sql.Identifier(docs), sql.Literal(CAROL))
    )
    async with _subscribed(server, docs, alice=token(ALICE), carol=token(CAROL)) as clients:
        await _insert(db, docs, owner=ALICE, title="alice's")
        # Bob's: no other policy can make it visible to carol, so hers is evaluated and fails. (Her own row
        # would not do: PostgreSQL may stop at the policy that shows her her own row, in any order.)
        await _insert(db, docs, owner=BOB, title="sentinel")
        seen_by_alice = _summary(await _until_sentinel_of(clients["alice"], ALICE, db, docs))
        carol_messages = [await clients["carol"].receive() for _ in range(2)]
    assert seen_by_alice == [("INSERT", "alice's")]
    assert [m["type"] for m in carol_messages] == ["error", "error"], carol_messages
    assert all(m["code"] == "authorization_failed" for m in carol_messages)


async def _until_sentinel_of(
    client: RealtimeClient, owner: str, db: psycopg.AsyncConnection, table: str
) -> list[dict[str, Any]]:
    await _insert(db, table, owner=owner, title="sentinel")
    return await _until_sentinel(client)


async def test_subscribing_without_a_policy_or_a_grant_is_refused(
    server: ServerThread, db: psycopg.AsyncConnection, docs: str
) -> None:
    locked = f"{docs}_locked"
    await db.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(sql.Identifier(locked)))
    await db.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(sql.Identifier(locked)))
    await db.execute(sql.SQL("GRANT SELECT ON {} TO authenticated").format(sql.Identifier(locked)))
    await db.execute("SELECT enable_realtime('public', %s)", (locked,))
    async with realtime_client(f"{server.ws_url}?token={token(ALICE)}") as client:
        await client.send(type="subscribe", channel=f"table:public.{locked}")
        no_policy = await client.receive()
    async with realtime_client(server.ws_url) as anonymous:
        await anonymous.send(type="subscribe", channel=f"table:public.{locked}")
        no_grant = await anonymous.receive()
    assert "no SELECT policy for role 'authenticated'" in no_policy["error"]
    assert "may not SELECT" in no_grant["error"]


@BOTH_MODES
async def test_replay_applies_the_same_policies(
    server: ServerThread, db: psycopg.AsyncConnection, docs: str
) -> None:
    async with realtime_client(f"{server.ws_url}?token={token(ALICE)}") as client:
        await client.subscribe(f"table:public.{docs}")
        await _insert(db, docs, owner=ALICE, title="mark")
        [mark] = await client.broadcasts(1)
    await _insert(db, docs, owner=BOB, title="bob's")
    await _insert(db, docs, owner=ALICE, title="alice's", secret="x")
    async with realtime_client(f"{server.ws_url}?token={token(ALICE)}") as client:
        await client.subscribe(f"table:public.{docs}", since=mark["id"])
        await _insert(db, docs, owner=ALICE, title="sentinel")
        replayed = await _until_sentinel(client)
    assert _summary(replayed) == [("INSERT", "alice's")]
    assert "secret" not in replayed[0]["payload"]["record"]


@BOTH_MODES
async def test_all_audiences_of_a_role_share_one_check_per_batch(
    server: ServerThread, db: psycopg.AsyncConnection, docs: str
) -> None:
    users = [str(uuid.UUID(int=100 + n)) for n in range(5)]
    tokens = {f"u{n}c{c}": token(user) for n, user in enumerate(users) for c in range(3)}
    async with _subscribed(server, docs, **tokens) as clients:
        rls = server.services.rls
        checks_before = rls.checks_issued
        async with db.transaction():  # one transaction: read and authorized as one batch
            for n, user in enumerate(users):
                await _insert(db, docs, owner=user, title=f"row {n}")
                await _insert(db, docs, owner=user, title="sentinel")
        for name, client in clients.items():
            assert _summary(await _until_sentinel(client)) == [("INSERT", f"row {name[1]}")]
        checks = rls.checks_issued - checks_before
    # 15 connections, 5 audiences of one role, 10 changes: one check for the whole batch.
    assert checks == 1
