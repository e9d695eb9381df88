// Table channels against the real server: every API, and ids past 2^53 kept exact.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { RealtimeClient } from "../dist/index.js";
import { createTable, next, ServerProcess, sql, startDatabase, waitFor, WebSocket } from "./support/harness.mjs";

// Past Number.MAX_SAFE_INTEGER: a client that parsed ids as numbers would round them.
const FIRST_ID = 2n ** 53n + 11n;
let database, server, db;

before(async () => {
  database = await startDatabase();
  db = await sql(database);
  await db.query("UPDATE fluxbase_realtime.sequencer_state SET next_id = $1", [FIRST_ID.toString()]);
  server = await new ServerProcess(database.url).start();
});

after(async () => {
  await server?.stop();
  await db?.end();
  await database?.close();
});

function client(options = {}) {
  return new RealtimeClient(server.url, { WebSocket, ...options });
}

test("subscribe resolves on the ack; each event type reaches its handlers, with exact ids", async (t) => {
  const table = await createTable(db);
  const realtime = client();
  t.after(() => realtime.disconnect());
  const seen = { INSERT: [], UPDATE: [], DELETE: [], all: [] };
  const channel = realtime
    .channel(`table:public.${table}`)
    .on("INSERT", (c) => seen.INSERT.push(c))
    .on("UPDATE", (c) => seen.UPDATE.push(c))
    .on("DELETE", (c) => seen.DELETE.push(c))
    .on("*", (c) => seen.all.push(c));
  const statuses = [];
  channel.on("status", (s) => statuses.push(s));
  assert.equal(await channel.subscribe(), channel);
  assert.equal(channel.subscribed, true);
  assert.deepEqual(statuses, ["subscribed"]);

  await db.query(`INSERT INTO "${table}" (name, n) VALUES ('a', 1)`);
  await db.query(`UPDATE "${table}" SET n = 2`);
  await db.query(`DELETE FROM "${table}"`);
  await waitFor(() => seen.all.length === 3, "three changes");

  assert.deepEqual(seen.all.map((c) => c.type), ["INSERT", "UPDATE", "DELETE"]);
  assert.deepEqual(seen.INSERT[0].record, { id: 1, name: "a", n: 1 });
  assert.deepEqual(seen.UPDATE[0].old_record, { id: 1, name: "a", n: 1 });
  assert.deepEqual(seen.UPDATE[0].record, { id: 1, name: "a", n: 2 });
  assert.deepEqual(seen.DELETE[0].old_record, { id: 1, name: "a", n: 2 });
  assert.equal(seen.INSERT[0].table, table);
  assert.equal(seen.INSERT[0].schema, "public");
  const ids = seen.all.map((c) => BigInt(c.id));
  assert.ok(ids[0] >= FIRST_ID, `id ${ids[0]} is past 2^53`);
  assert.deepEqual(ids, [ids[0], ids[0] + 1n, ids[0] + 2n], "consecutive, exact");
  assert.equal(channel.lastId, seen.all[2].id);
});

test("subscribe rejects with the server's error", async (t) => {
  const realtime = client();
  t.after(() => realtime.disconnect());
  const channel = realtime.channel("table:public.does_not_exist");
  const statuses = [];
  channel.on("status", (s) => statuses.push(s));
  await assert.rejects(channel.subscribe(), (error) => {
    assert.equal(error.name, "RealtimeError");
    assert.match(error.message, /table public\.does_not_exist does not exist/);
    return true;
  });
  assert.deepEqual(statuses, ["error"]);
});

test("unsubscribe stops delivery; channels share one socket", async (t) => {
  const [first, second] = [await createTable(db), await createTable(db)];
  const opened = [];
  const realtime = client();
  realtime.on("status", (s) => s === "open" && opened.push(s));
  t.after(() => realtime.disconnect());
  const a = [];
  const b = [];
  const one = realtime.channel(`table:public.${first}`).on("*", (c) => a.push(c));
  const two = realtime.channel(`table:public.${second}`).on("*", (c) => b.push(c));
  await Promise.all([one.subscribe(), two.subscribe()]);
  await db.query(`INSERT INTO "${first}" (name) VALUES ('before')`);
  await waitFor(() => a.length === 1);
  await one.unsubscribe();
  await db.query(`INSERT INTO "${first}" (name) VALUES ('after')`);
  // The sentinel: committed after the change that must not arrive, on the same connection.
  await db.query(`INSERT INTO "${second}" (name) VALUES ('sentinel')`);
  await waitFor(() => b.length === 1, "the sentinel");
  assert.equal(a.length, 1);
  assert.equal(opened.length, 1, "one WebSocket for both channels");
});

test("two Channel objects on one table share the subscription; the last unsubscribe ends it", async (t) => {
  const table = await createTable(db);
  const sentinelTable = await createTable(db);
  const realtime = client();
  t.after(() => realtime.disconnect());
  const a = [];
  const b = [];
  const sentinel = [];
  const one = realtime.channel(`table:public.${table}`).on("INSERT", (c) => a.push(c.record.name));
  const two = realtime.channel(`table:public.${table}`).on("INSERT", (c) => b.push(c.record.name));
  await realtime.channel(`table:public.${sentinelTable}`).on("*", (c) => sentinel.push(c)).subscribe();
  await one.subscribe();
  await two.subscribe();
  await db.query(`INSERT INTO "${table}" (name) VALUES ('x')`);
  await waitFor(() => a.length === 1 && b.length === 1);
  await one.unsubscribe();
  await db.query(`INSERT INTO "${table}" (name) VALUES ('y')`);
  await waitFor(() => b.length === 2, "y for the remaining channel");
  assert.deepEqual(a, ["x"]);
  await two.unsubscribe();
  await db.query(`INSERT INTO "${table}" (name) VALUES ('z')`);
  await db.query(`INSERT INTO "${sentinelTable}" (name) VALUES ('sentinel')`);
  await waitFor(() => sentinel.length === 1, "the sentinel");
  assert.deepEqual(b, ["x", "y"]);
});

test("since replays what followed an id, exactly", async (t) => {
  const table = await createTable(db);
  const realtime = client();
  t.after(() => realtime.disconnect());
  const first = [];
  const live = realtime.channel(`table:public.${table}`).on("INSERT", (c) => first.push(c));
  await live.subscribe();
  for (const name of ["a", "b", "c"]) await db.query(`INSERT INTO "${table}" (name) VALUES ($1)`, [name]);
  await waitFor(() => first.length === 3);
  await live.unsubscribe();

  const replayed = [];
  const resumed = realtime
    .channel(`table:public.${table}`, { since: first[0].id })
    .on("INSERT", (c) => replayed.push(c.record.name));
  await resumed.subscribe();
  await waitFor(() => replayed.length === 2);
  assert.deepEqual(replayed, ["b", "c"]);
});

test("a handler that throws does not stop the others; the error is reported", async (t) => {
  const table = await createTable(db);
  const realtime = client();
  const errors = [];
  realtime.on("error", (e) => errors.push(e));
  t.after(() => realtime.disconnect());
  const got = [];
  const channel = realtime
    .channel(`table:public.${table}`)
    .on("INSERT", () => {
      throw new Error("application bug");
    })
    .on("INSERT", (c) => got.push(c));
  await channel.subscribe();
  await db.query(`INSERT INTO "${table}" (name) VALUES ('a')`);
  await waitFor(() => got.length === 1);
  assert.equal(errors[0].message, "application bug");
  assert.equal(channel.lastId, got[0].id);
});

test("a TRUNCATE of one partition names it, then resets the channel (reload); a whole TRUNCATE does not", async (t) => {
  const root = `p_${Math.random().toString(36).slice(2, 10)}`;
  await db.query(`CREATE TABLE "${root}" (id int, v text) PARTITION BY RANGE (id)`);
  await db.query(`CREATE TABLE "${root}_a" PARTITION OF "${root}" FOR VALUES FROM (0) TO (100)`);
  await db.query(`CREATE TABLE "${root}_b" PARTITION OF "${root}" FOR VALUES FROM (100) TO (200)`);
  await db.query("SELECT enable_realtime('public', $1)", [root]);
  const realtime = client();
  t.after(() => realtime.disconnect());
  const events = [];
  const channel = realtime
    .channel(`table:public.${root}`)
    .on("*", (c) => events.push([c.type, c.partition ?? null]))
    .on("status", (s, detail) => s === "reset" && events.push(["reset", detail]));
  await channel.subscribe();
  await db.query(`TRUNCATE "${root}_a"`);
  await db.query(`TRUNCATE "${root}"`);
  await db.query(`INSERT INTO "${root}" VALUES (150, 'after')`);
  await waitFor(() => events.length === 4, "four events");
  const partition = { schema: "public", table: `${root}_a` };
  assert.deepEqual(events, [
    ["TRUNCATE", partition],
    ["reset", { reason: "partition_truncated", partition }],
    ["TRUNCATE", null],
    ["INSERT", null],
  ]);
});

test("the client needs a WebSocket implementation where there is no global one", () => {
  if (globalThis.WebSocket) return; // Node >= 22 has one
  assert.throws(() => new RealtimeClient(server.url), /pass one as \{ WebSocket \}/);
});
