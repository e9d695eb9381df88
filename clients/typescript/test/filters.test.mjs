// Subscribe options of the filters issue against the real server: a filter, events and columns pass
// through; two subscriptions of one table on one connection, each with its own id, each receive their
// own view, and each resumes on its own after a cut.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { RealtimeClient } from "../dist/index.js";
import { createTable, Proxy, ServerProcess, sql, startDatabase, waitFor, WebSocket } from "./support/harness.mjs";

let database, server, db;

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

test("filter, events and columns are applied by the server; a bad filter rejects subscribe()", async (t) => {
  const table = await createTable(db);
  const realtime = new RealtimeClient(server.url, { WebSocket });
  t.after(() => realtime.disconnect());
  const got = [];
  await realtime
    .channel(`table:public.${table}`, { filter: "n=gt.10", events: ["INSERT"], columns: ["n"] })
    .on("*", (c) => got.push([c.type, c.record]))
    .subscribe();
  const sentinel = [];
  await realtime.channel(`table:public.${table}`, { subscription: "all" }).on("*", (c) => sentinel.push(c)).subscribe();
  await db.query(`INSERT INTO "${table}" (name, n) VALUES ('small', 1), ('big', 20)`);
  await db.query(`UPDATE "${table}" SET n = 30 WHERE n = 20`);
  await waitFor(() => sentinel.length === 3, "every change on the unfiltered subscription");
  assert.deepEqual(got, [["INSERT", { id: 2, n: 20 }]]);
  await assert.rejects(
    realtime.channel(`table:public.${table}`, { filter: "nope=eq.1", subscription: "bad" }).subscribe(),
    (error) => error.name === "RealtimeError" && /nope/.test(error.message),
  );
});

test("two subscriptions of one table, each with its id, keep their own view across cuts", async (t) => {
  const table = await createTable(db);
  const proxy = await new Proxy(server.port).start();
  t.after(() => proxy.close());
  const realtime = new RealtimeClient(proxy.url, { WebSocket, backoff: { baseMs: 20, capMs: 200 } });
  t.after(() => realtime.disconnect());
  const odd = [];
  const even = [];
  await realtime.channel(`table:public.${table}`, { filter: "name=eq.odd", subscription: "odd" }).on("INSERT", (c) => odd.push(c.record.n)).subscribe();
  await realtime.channel(`table:public.${table}`, { filter: "name=eq.even", subscription: "even" }).on("INSERT", (c) => even.push(c.record.n)).subscribe();
  const COUNT = 100;
  let cuts = 0;
  for (let n = 1; n <= COUNT; n++) {
    await db.query(`INSERT INTO "${table}" (name, n) VALUES ($1, $2)`, [n % 2 ? "odd" : "even", n]);
    if (n % 25 === 5) {
      await proxy.cutLive();
      cuts += 1;
    }
  }
  await waitFor(() => odd.length + even.length >= COUNT, `${COUNT} changes (got ${odd.length + even.length})`);
  const numbers = Array.from({ length: COUNT }, (_, i) => i + 1);
  assert.deepEqual(odd, numbers.filter((n) => n % 2));
  assert.deepEqual(even, numbers.filter((n) => !(n % 2)));
  assert.ok(proxy.accepted >= cuts + 1 && cuts === 4);
});
