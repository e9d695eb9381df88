// Broadcast channels against the real server: client broadcasts with acks and `self`, database-sent
// messages (with ids) resumed exactly once after a cut, presence with its events, re-tracked after a
// reconnect.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { RealtimeClient } from "../dist/index.js";
import { mintToken, Proxy, ServerProcess, sql, startDatabase, waitFor, WebSocket } from "./support/harness.mjs";

let database, server, db;
let rooms = 0;

before(async () => {
  database = await startDatabase();
  db = await sql(database);
  server = await new ServerProcess(database.url).start();
});

after(async () => {
  await server?.stop();
  await db?.end();
  await database?.close();
});

function client(t, url = server.url, options = {}) {
  const realtime = new RealtimeClient(url, { WebSocket, backoff: { baseMs: 20, capMs: 200 }, ...options });
  t.after(() => realtime.disconnect());
  return realtime;
}

const token = (sub) => mintToken({ sub, role: "authenticated", exp: Math.floor(Date.now() / 1000) + 600 });
const room = () => `broadcast:room-${process.pid}-${++rooms}`;

test("send() resolves on the ack; others receive it, the sender only with self", async (t) => {
  const name = room();
  const [a, b, c] = [client(t), client(t), client(t)];
  const got = { a: [], b: [], c: [] };
  const ca = a.channel(name).on("broadcast", "*", (m) => got.a.push(m.payload));
  const cb = b.channel(name).on("broadcast", "cursor", (m) => got.b.push(m.payload));
  const cc = c.channel(name, { self: true }).on("broadcast", "cursor", (m) => got.c.push(m));
  await Promise.all([ca.subscribe(), cb.subscribe(), cc.subscribe()]);
  await ca.send("cursor", { from: "a" });
  await cc.send("cursor", { from: "c" });
  await cb.send("other", { from: "b" }); // the sentinel for a: sent after a's own message
  await waitFor(() => got.a.length === 2 && got.b.length === 2 && got.c.length === 2);
  assert.deepEqual(got.a, [{ from: "c" }, { from: "b" }], "not its own message");
  assert.deepEqual(got.b, [{ from: "a" }, { from: "c" }], "only the cursor event");
  assert.deepEqual(got.c.map((m) => m.payload), [{ from: "a" }, { from: "c" }], "its own too, with self");
  assert.equal(got.c[0].event, "cursor");
  assert.equal(got.c[0].id, undefined, "a client's broadcast has no id");
});

test("send() on a channel never subscribed is refused by the client; the server's refusals reject", async (t) => {
  const realtime = client(t);
  assert.throws(() => realtime.channel(room()).send("x", {}), /subscribe\(\) to broadcast:.* first/);
  await assert.rejects(realtime.channel("broadcast:").subscribe(), (error) => error.name === "RealtimeError");
});

test("database-sent messages carry ids and resume exactly once, in order, after cuts", async (t) => {
  const name = room();
  const proxy = await new Proxy(server.port).start();
  t.after(() => proxy.close());
  const realtime = client(t, proxy.url);
  const got = [];
  const statuses = [];
  const channel = realtime
    .channel(name)
    .on("broadcast", "tick", (m) => got.push(m))
    .on("status", (status) => statuses.push(status));
  await channel.subscribe();
  const COUNT = 120;
  let cuts = 0;
  for (let n = 1; n <= COUNT; n++) {
    await db.query("SELECT realtime_broadcast($1, 'tick', $2)", [name, JSON.stringify({ n })]);
    if (n % 30 === 10) {
      // Cut a subscribed connection: one cut before the channel resumed would count one resume short.
      await waitFor(() => statuses.length === cuts + 1, `the channel back after cut ${cuts}`);
      proxy.cut();
      cuts += 1;
    }
  }
  await waitFor(() => got.length >= COUNT, `${COUNT} messages (got ${got.length})`);
  assert.deepEqual(got.map((m) => m.payload.n), Array.from({ length: COUNT }, (_, i) => i + 1));
  for (let i = 1; i < got.length; i++) assert.ok(BigInt(got[i].id) > BigInt(got[i - 1].id));
  assert.ok(proxy.accepted >= 5);
  assert.deepEqual(statuses, ["subscribed", "resumed", "resumed", "resumed", "resumed"]);
});

test("presence: state, join, update, leave; re-tracked after a reconnect", async (t) => {
  const name = room();
  const proxy = await new Proxy(server.port).start();
  t.after(() => proxy.close());
  const ann = client(t, proxy.url, { token: token("ann") });
  const bob = client(t, server.url, { token: token("bob") });
  const seen = [];
  const watch = bob
    .channel(name)
    .on("presence", "join", (key, entries) => seen.push(["join", key, entries.map((e) => e.state)]))
    .on("presence", "update", (key, entries) => seen.push(["update", key, entries.map((e) => e.state)]))
    .on("presence", "leave", (key) => seen.push(["leave", key]));
  await watch.subscribe();
  const annChannel = ann.channel(name);
  await annChannel.subscribe();
  await annChannel.track({ name: "Ann" });
  await waitFor(() => watch.presence().ann?.[0]?.state?.name === "Ann", "Ann's presence at Bob's");
  await annChannel.track({ name: "Ann", typing: true });
  await waitFor(() => watch.presence().ann?.[0]?.state?.typing === true, "the update");
  assert.deepEqual(seen, [
    ["join", "ann", [{ name: "Ann" }]],
    ["update", "ann", [{ name: "Ann", typing: true }]],
  ]);
  assert.ok(annChannel.presence().ann, "Ann sees herself");

  seen.length = 0;
  proxy.cut(); // Ann's connection: her presence leaves, and she tracks again on the new one
  await waitFor(() => seen.some(([event]) => event === "join"), "Ann back");
  assert.deepEqual(seen, [["leave", "ann"], ["join", "ann", [{ name: "Ann", typing: true }]]]);
  assert.equal(watch.presence().ann.length, 1, "one entry: the old one left");

  seen.length = 0;
  await annChannel.untrack();
  await waitFor(() => seen.length === 1);
  assert.deepEqual(seen, [["leave", "ann"]]);
  assert.equal(watch.presence().ann, undefined);
});

test("unsubscribe also untracks", async (t) => {
  const name = room();
  const ann = client(t, server.url, { token: token("ann2") });
  const bob = client(t);
  const watch = bob.channel(name);
  await watch.subscribe();
  const annChannel = ann.channel(name);
  await annChannel.subscribe();
  await annChannel.track({ here: true });
  await waitFor(() => watch.presence().ann2, "Ann's presence");
  await annChannel.unsubscribe();
  await waitFor(() => !watch.presence().ann2, "gone");
});
