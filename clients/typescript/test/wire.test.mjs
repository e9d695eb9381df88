// What the client puts on the wire and how it routes what comes back, against a scripted peer (a real
// `ws` server on loopback that records the client's messages and answers as the protocol says): the
// subscribe options of the filters issue and the (channel, subscription) routing, which the server on
// main may not implement yet; and the re-subscribe after a reconnect, message by message.
import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocketServer } from "ws";
import { RealtimeClient } from "../dist/index.js";
import { waitFor, WebSocket } from "./support/harness.mjs";

async function scriptedServer() {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.once("listening", resolve));
  const peer = { received: [], sockets: [], server, url: `ws://127.0.0.1:${server.address().port}/realtime` };
  server.on("connection", (socket, request) => {
    peer.sockets.push(socket);
    peer.lastUrl = request.url;
    socket.on("message", (data) => {
      const message = JSON.parse(String(data));
      peer.received.push(message);
      if (message.type !== "broadcast") {
        socket.send(JSON.stringify({ type: "ack", channel: message.channel, ref: message.ref }));
      }
    });
  });
  peer.send = (frame) => peer.sockets.at(-1).send(typeof frame === "string" ? frame : JSON.stringify(frame));
  peer.close = () => new Promise((resolve) => {
    for (const socket of server.clients) socket.terminate();
    server.close(resolve);
  });
  return peer;
}

test("filter, events, columns and subscription go out with the subscribe; frames route by subscription", async (t) => {
  const peer = await scriptedServer();
  t.after(() => peer.close());
  const realtime = new RealtimeClient(peer.url, { WebSocket });
  t.after(() => realtime.disconnect());
  const list = [];
  const detail = [];
  const plain = [];
  const channel = "table:public.orders";
  await realtime
    .channel(channel, { filter: "status=eq.paid", events: ["INSERT", "UPDATE"], columns: ["id", "status"], subscription: "list" })
    .on("*", (c) => list.push(c))
    .subscribe();
  await realtime.channel(channel, { filter: "id=eq.7", subscription: "detail" }).on("*", (c) => detail.push(c)).subscribe();
  await realtime.channel(channel).on("*", (c) => plain.push(c)).subscribe();
  const subscribes = peer.received.filter((m) => m.type === "subscribe");
  assert.deepEqual(subscribes[0], {
    type: "subscribe",
    channel,
    filter: "status=eq.paid",
    events: ["INSERT", "UPDATE"],
    columns: ["id", "status"],
    subscription: "list",
    ref: subscribes[0].ref,
  });
  assert.deepEqual(subscribes[1], { type: "subscribe", channel, filter: "id=eq.7", subscription: "detail", ref: subscribes[1].ref });
  assert.deepEqual(subscribes[2], { type: "subscribe", channel, ref: subscribes[2].ref });

  const change = (id, subscription) => ({
    type: "broadcast",
    channel,
    id,
    ...(subscription ? { subscription } : {}),
    payload: { type: "INSERT", schema: "public", table: "orders", record: { id: 7 } },
  });
  peer.send(change(10, "list"));
  peer.send(change(10, "detail"));
  peer.send(change(11, "list"));
  peer.send(change(12));
  peer.send(change(11, "list")); // a duplicate: dropped
  await waitFor(() => plain.length === 1);
  assert.deepEqual(list.map((c) => [c.id, c.subscription]), [["10", "list"], ["11", "list"]]);
  assert.deepEqual(detail.map((c) => [c.id, c.subscription]), [["10", "detail"]]);
  assert.deepEqual(plain.map((c) => c.id), ["12"]);
});

test("two subscriptions of one channel with different options need subscription ids", async (t) => {
  const peer = await scriptedServer();
  t.after(() => peer.close());
  const realtime = new RealtimeClient(peer.url, { WebSocket });
  t.after(() => realtime.disconnect());
  await realtime.channel("table:public.orders", { filter: "a=eq.1" }).subscribe();
  assert.throws(() => realtime.channel("table:public.orders", { filter: "a=eq.2" }).subscribe(), /distinct 'subscription' id/);
});

test("after a reconnect: subscribe again with since (a string, exact), re-track, then send", async (t) => {
  const peer = await scriptedServer();
  t.after(() => peer.close());
  const realtime = new RealtimeClient(peer.url, {
    WebSocket,
    token: "header.eyJzdWIiOiJ4In0.sig",
    backoff: { baseMs: 1, capMs: 5 },
  });
  t.after(() => realtime.disconnect());
  const table = realtime.channel("table:public.orders", { filter: "status=eq.paid" });
  const got = [];
  table.on("INSERT", (c) => got.push(c.id));
  await table.subscribe();
  const room = realtime.channel("broadcast:room1", { self: true });
  const cursors = [];
  room.on("broadcast", "cursor", (m) => cursors.push(m));
  await room.subscribe();
  await room.track({ name: "Ann" });
  peer.send(
    '{"type":"broadcast","channel":"table:public.orders","id":9007199254740993,"payload":{"type":"INSERT","record":{"id":1}}}',
  );
  peer.send({ type: "broadcast", channel: "broadcast:room1", event: "cursor", payload: { x: 1 } });
  peer.send({ type: "broadcast", channel: "broadcast:room1", id: 40, event: "cursor", payload: { x: 2 } });
  await waitFor(() => got.length === 1 && cursors.length === 2);
  assert.equal(peer.lastUrl, "/realtime?token=header.eyJzdWIiOiJ4In0.sig");

  peer.received.length = 0;
  peer.sockets.at(-1).terminate();
  await waitFor(() => peer.received.length >= 3, "the re-subscribes and the re-track");
  const [first, second, third] = peer.received;
  assert.deepEqual(first, {
    type: "subscribe",
    channel: "table:public.orders",
    filter: "status=eq.paid",
    since: "9007199254740993",
    ref: first.ref,
  });
  assert.deepEqual(second, { type: "subscribe", channel: "broadcast:room1", self: true, since: "40", ref: second.ref });
  assert.deepEqual(third, { type: "track", channel: "broadcast:room1", state: { name: "Ann" }, ref: third.ref });
  // Replayed again by the server: not delivered twice.
  peer.send('{"type":"broadcast","channel":"table:public.orders","id":9007199254740993,"payload":{"type":"INSERT"}}');
  peer.send('{"type":"broadcast","channel":"table:public.orders","id":9007199254740994,"payload":{"type":"INSERT"}}');
  await waitFor(() => got.length === 2);
  assert.deepEqual(got, ["9007199254740993", "9007199254740994"]);

  const sent = room.send("cursor", { x: 3 });
  await waitFor(() => peer.received.some((m) => m.type === "broadcast"));
  const broadcast = peer.received.find((m) => m.type === "broadcast");
  assert.deepEqual(broadcast, { type: "broadcast", channel: "broadcast:room1", event: "cursor", payload: { x: 3 }, ref: broadcast.ref });
  peer.send({ type: "ack", channel: "broadcast:room1", ref: broadcast.ref });
  await sent;
  await room.untrack();
  assert.ok(peer.received.some((m) => m.type === "untrack"));
});

test("a refused broadcast rejects send() with the server's error", async (t) => {
  const peer = await scriptedServer();
  t.after(() => peer.close());
  peer.server.on("connection", (socket) =>
    socket.on("message", (data) => {
      const message = JSON.parse(String(data));
      if (message.type === "broadcast") {
        socket.send(JSON.stringify({ type: "error", code: "payload_too_large", error: "too large", channel: message.channel, ref: message.ref }));
      }
    }),
  );
  const realtime = new RealtimeClient(peer.url, { WebSocket });
  t.after(() => realtime.disconnect());
  const room = realtime.channel("broadcast:room1");
  await room.subscribe();
  await assert.rejects(room.send("big", {}), (error) => error.code === "payload_too_large");
});

test("frames read in the same tick as the ack (a replay sent with it) are delivered", async (t) => {
  const peer = await scriptedServer();
  t.after(() => peer.close());
  peer.server.removeAllListeners("connection");
  peer.server.on("connection", (socket) =>
    socket.on("message", (data) => {
      const message = JSON.parse(String(data));
      // One synchronous burst: the client (in this process) reads it all in one go.
      socket.send(JSON.stringify({ type: "ack", channel: message.channel, ref: message.ref }));
      for (const id of [5, 6, 7]) {
        socket.send(JSON.stringify({ type: "broadcast", channel: message.channel, id, payload: { type: "INSERT" } }));
      }
    }),
  );
  const realtime = new RealtimeClient(peer.url, { WebSocket });
  t.after(() => realtime.disconnect());
  const got = [];
  await realtime.channel("table:public.t", { since: "4" }).on("*", (c) => got.push(c.id)).subscribe();
  await waitFor(() => got.length === 3);
  assert.deepEqual(got, ["5", "6", "7"]);
});

test("off() removes a handler; disconnect() closes for good", async (t) => {
  const peer = await scriptedServer();
  t.after(() => peer.close());
  const realtime = new RealtimeClient(peer.url, { WebSocket, backoff: { baseMs: 1, capMs: 2 } });
  const statuses = [];
  const stopListening = realtime.on("status", (s) => statuses.push(s));
  const kept = [];
  const removed = [];
  const drop = (c) => removed.push(c.id);
  const channel = realtime.channel("table:public.t").on("*", drop).on("*", (c) => kept.push(c.id));
  await channel.subscribe();
  channel.off("*", drop);
  peer.send({ type: "broadcast", channel: "table:public.t", id: 1, payload: { type: "INSERT" } });
  await waitFor(() => kept.length === 1);
  assert.deepEqual(removed, []);

  realtime.disconnect();
  assert.equal(realtime.status, "idle");
  stopListening();
  // The sentinel: another client's connection; a first client still reconnecting would come before it.
  const other = new RealtimeClient(peer.url, { WebSocket });
  t.after(() => other.disconnect());
  await other.channel("table:public.t").subscribe();
  assert.equal(peer.sockets.length, 2, "the disconnected client did not come back");
  assert.deepEqual(statuses, ["connecting", "open", "idle"]);
});

test("an error naming a channel but no subscription id reaches every subscription of that channel", async (t) => {
  const peer = await scriptedServer();
  t.after(() => peer.close());
  const realtime = new RealtimeClient(peer.url, { WebSocket });
  t.after(() => realtime.disconnect());
  const resets = [];
  for (const id of ["a", "b"]) {
    await realtime
      .channel("table:public.t", { subscription: id, filter: `x=eq.${id}` })
      .on("status", (s) => s === "reset" && resets.push(id))
      .subscribe();
  }
  peer.send({ type: "error", channel: "table:public.t", code: "replay_gap", error: "gone" });
  await waitFor(() => resets.length === 2);
  assert.deepEqual(resets.sort(), ["a", "b"]);
});
