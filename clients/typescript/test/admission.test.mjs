// A server refusing for load (issue 14): the client stays away for the Retry-After of a 503 at capacity,
// and sends a subscribe refused with `retry_after` again only after it, plus jitter in both cases.
//
// Waiting "long enough" is proved by counting, not by a clock: while the client should be waiting, a
// second client makes refused attempts one after the other, and the server's refusal counter must grow by
// exactly those. The client's own backoff is a millisecond, so one that ignored the hint would have come
// back (and been counted) many times meanwhile.
import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, test } from "node:test";
import { RealtimeClient } from "../dist/index.js";
import { createTable, ServerProcess, sql, startDatabase, waitFor, WebSocket } from "./support/harness.mjs";

// Long against the test's work while the client must wait, short against the client's cap on a hint.
const RETRY_AFTER = 30;
// Refused attempts by the test's second client while the client under test must stay away.
const OTHERS = 10;
const SEQUENCER_LOCK = "SELECT pg_advisory_lock(hashtext('fluxbase_realtime.sequencer'))";
const SEQUENCER_UNLOCK = "SELECT pg_advisory_unlock(hashtext('fluxbase_realtime.sequencer'))";
const WAITING_FOR_ADVISORY_LOCK = `SELECT count(*)::int AS n FROM pg_locks
  WHERE locktype = 'advisory' AND NOT granted
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
let database, db;

before(async () => {
  database = await startDatabase();
  db = await sql(database);
});

after(async () => {
  await db?.end();
  await database?.close();
});

/** One sample of the server's /metrics (0 when absent). */
async function metric(server, name, labels = "") {
  const text = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`fluxbase_realtime_${name}${labels} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

/** A client whose own backoff is next to nothing: only the server's hint keeps it away. */
function eagerClient(url) {
  const realtime = new RealtimeClient(url, { WebSocket, backoff: { baseMs: 1, capMs: 1 } });
  const statuses = [];
  realtime.on("status", (status, detail) => statuses.push({ status, ...detail }));
  return { realtime, statuses };
}

/** A bare WebSocket speaking the protocol: frames are queued until received. */
async function rawClient(url) {
  const socket = new WebSocket(url);
  const frames = [];
  socket.on("message", (data) => {
    const frame = JSON.parse(String(data));
    if (frame.type !== "heartbeat") frames.push(frame);
  });
  await once(socket, "open");
  return {
    send: (message) => socket.send(JSON.stringify(message)),
    async receive() {
      await waitFor(() => frames.length > 0, "a frame");
      return frames.shift();
    },
    close: () => socket.close(),
  };
}

/** A handshake the server answers with an HTTP status instead of the upgrade: that response. */
async function refusedHandshake(url) {
  const socket = new WebSocket(url);
  socket.on("error", () => {}); // the abort below reports itself as an error
  const [, response] = await once(socket, "unexpected-response");
  socket.close();
  return response;
}

test("refused with 503 and Retry-After at capacity, the client stays away that long", async (t) => {
  const server = await new ServerProcess(database.url, {
    REALTIME_MAX_CONNECTIONS: "1",
    REALTIME_RETRY_AFTER_SECONDS: String(RETRY_AFTER),
  }).start();
  t.after(() => server.stop());
  const occupant = new WebSocket(server.url);
  await once(occupant, "open");
  t.after(() => occupant.close());
  const { realtime, statuses } = eagerClient(server.url);
  t.after(() => realtime.disconnect());
  realtime.connect();
  const rejected = () => metric(server, "connections_rejected_total", '{reason="capacity"}');
  await waitFor(async () => (await rejected()) >= 1 && statuses.some((s) => s.status === "closed"), "a refusal");
  for (let n = 0; n < OTHERS; n++) {
    const response = await refusedHandshake(server.url);
    assert.equal(response.statusCode, 503);
    assert.equal(response.headers["retry-after"], String(RETRY_AFTER));
  }
  // Every refusal since the client's first was one of the test's: it stayed away, as it said it would.
  assert.equal(await rejected(), 1 + OTHERS);
  const closes = statuses.filter((s) => s.status === "closed");
  assert.equal(closes.length, 1, JSON.stringify(statuses));
  assert.ok(closes[0].retryInMs >= RETRY_AFTER * 1000, `retries in ${closes[0].retryInMs} ms`);
  assert.equal(realtime.status, "closed");
});

test("a subscribe refused with retry_after is sent again only after it, even the first one", async (t) => {
  const table = await createTable(db);
  const channelName = `table:public.${table}`;
  const server = await new ServerProcess(database.url, {
    REALTIME_MAX_PENDING_SUBSCRIBES: "1",
    REALTIME_RETRY_AFTER_SECONDS: String(RETRY_AFTER),
  }).start();
  t.after(() => server.stop());
  // Held by the test, the sequencer's lock keeps a subscribe's pass from finishing: it waits, and fills
  // the one place for a waiting subscribe.
  const holder = await sql(database);
  t.after(() => holder.end());
  const waiting = await rawClient(server.url);
  const other = await rawClient(server.url);
  t.after(() => (waiting.close(), other.close()));
  await holder.query(SEQUENCER_LOCK);
  try {
    waiting.send({ type: "subscribe", channel: channelName, ref: "waits" });
    await waitFor(async () => (await db.query(WAITING_FOR_ADVISORY_LOCK)).rows[0].n >= 1, "the pass to wait");
    const { realtime } = eagerClient(server.url);
    t.after(() => realtime.disconnect());
    const channelStatuses = [];
    const channel = realtime.channel(channelName).on("status", (status) => channelStatuses.push(status));
    let settled = false;
    channel.subscribe().then(
      () => (settled = true),
      () => (settled = true),
    );
    const busy = () => metric(server, "subscribes_refused_busy_total");
    await waitFor(async () => (await busy()) >= 1 && channelStatuses.includes("error"), "the refusal");
    for (let n = 0; n < OTHERS; n++) {
      other.send({ type: "subscribe", channel: channelName, ref: `o${n}` });
      const refusal = await other.receive();
      assert.equal(refusal.code, "subscribe_failed", JSON.stringify(refusal));
      assert.equal(refusal.retry_after, RETRY_AFTER);
    }
    // Every refusal since the client's was one of the test's: it has not subscribed again, and has not
    // given up either (its subscribe() is still pending, not rejected).
    assert.equal(await busy(), 1 + OTHERS);
    assert.equal(settled, false);
  } finally {
    await holder.query(SEQUENCER_UNLOCK);
  }
  assert.equal((await waiting.receive()).type, "ack");
});
