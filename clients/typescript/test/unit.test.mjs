// The pure parts: backoff schedule, id order and extraction, token expiry, presence bookkeeping, pacing.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  backoffCeiling,
  backoffDelay,
  DEFAULT_BACKOFF,
  frameId,
  frameRetryAfter,
  isAfter,
  MAX_RETRY_AFTER_MS,
  parseRetryAfter,
  Presence,
  refreshDelay,
  tokenExpiresAt,
  topLevelId,
} from "../dist/index.js";
import { Outbox } from "../dist/outbox.js";

test("backoff: full jitter in [0, min(cap, base·2^n)), doubling up to the cap, never giving up", () => {
  const options = { baseMs: 100, capMs: 5_000 };
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6, 50, 5000].map((n) => backoffCeiling(n, options)),
    [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000],
  );
  for (const attempt of [0, 3, 10, 10_000]) {
    const ceiling = backoffCeiling(attempt, options);
    assert.equal(backoffDelay(attempt, options, () => 0), 0, "the lower bound is 0: full jitter");
    const top = backoffDelay(attempt, options, () => 0.999999);
    assert.ok(top < ceiling && top >= ceiling - 1, `${top} just under ${ceiling}`);
  }
  for (let i = 0; i < 1000; i++) {
    const delay = backoffDelay(i % 12, options);
    assert.ok(delay >= 0 && delay < backoffCeiling(i % 12, options));
  }
  assert.equal(backoffCeiling(0), DEFAULT_BACKOFF.baseMs);
  assert.equal(backoffCeiling(1e6), DEFAULT_BACKOFF.capMs);
  assert.equal(backoffCeiling(3, { capMs: 1000 }), 1000, "the cap is settable");
});

test("ids compare as integers, past 2^53", () => {
  assert.ok(isAfter("10", "9"));
  assert.ok(!isAfter("9", "10"));
  assert.ok(!isAfter("42", "42"));
  assert.ok(isAfter("1", null));
  assert.ok(isAfter("9007199254740993", "9007199254740992"));
  assert.ok(!isAfter("9007199254740992", "9007199254740993"));
});

test("the frame's own id is read exactly, never an id inside the payload", () => {
  const big = '{"type":"broadcast","channel":"table:public.t","id":9007199254740993,"payload":{"record":{"id":5}}}';
  assert.equal(frameId(JSON.parse(big).id, big), "9007199254740993");
  assert.equal(frameId(42, '{"id":42}'), "42");
  assert.equal(frameId("77", '{"id":"77"}'), "77");
  const nested = '{"type":"broadcast","payload":{"id":9007199254740993,"x":"\\"id\\":1"},"channel":"c"}';
  assert.equal(topLevelId(nested), null, "no top-level id: client broadcasts carry none");
  assert.equal(frameId(JSON.parse(nested).id, nested), null);
  const tricky = '{"payload":{"a":[{"id":1}],"s":"{\\"id\\":2}"},"id":18446744073709551615}';
  assert.equal(topLevelId(tricky), "18446744073709551615");
  assert.equal(frameId(undefined, "{}"), null);
  assert.equal(frameId(-1, '{"id":-1}'), null);
});

test("token expiry is read from exp without verifying; refresh comes before it", () => {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const token = `${encode({ alg: "HS256" })}.${encode({ sub: "ü", exp: 2_000_000_000 })}.sig`;
  assert.equal(tokenExpiresAt(token), 2_000_000_000_000);
  assert.equal(tokenExpiresAt(`${encode({})}.${encode({ sub: "x" })}.s`), null);
  assert.equal(tokenExpiresAt("not a token"), null);
  assert.equal(tokenExpiresAt("a.%%%.c"), null);
  assert.equal(refreshDelay(100_000, 0, 30_000), 70_000, "the margin before exp");
  assert.equal(refreshDelay(10_000, 0, 30_000), 5_000, "a short-lived token at half its remaining life");
  assert.equal(refreshDelay(1_000, 2_000, 30_000), 0, "already expired: at once");
});

test("presence: the state, its diffs, and what a new state changed", () => {
  const presence = new Presence();
  const ann = { presence_id: "p1", state: { name: "Ann" } };
  const bob = { presence_id: "p2", state: { name: "Bob" } };
  let changes = presence.replace({ "user-1": [ann] });
  assert.deepEqual(changes, [{ event: "join", key: "user-1", entries: [ann] }]);
  changes = presence.apply({ "user-2": [bob] }, {}, {});
  assert.deepEqual(presence.snapshot(), { "user-1": [ann], "user-2": [bob] });
  const ann2 = { presence_id: "p1", state: { name: "Ann", typing: true } };
  changes = presence.apply({}, { "user-1": [ann2] }, {});
  assert.deepEqual(changes, [{ event: "update", key: "user-1", entries: [ann2] }]);
  assert.deepEqual(presence.snapshot()["user-1"], [ann2], "an update replaces the entry, adds none");
  presence.apply({}, {}, { "user-2": [bob] });
  assert.deepEqual(Object.keys(presence.snapshot()), ["user-1"]);
  // After a reconnect: the new state says who left and who came meanwhile.
  const cid = { presence_id: "p3", state: {} };
  changes = presence.replace({ "user-3": [cid] });
  assert.deepEqual(changes, [
    { event: "join", key: "user-3", entries: [cid] },
    { event: "leave", key: "user-1", entries: [ann2] },
  ]);
  const copy = presence.snapshot();
  copy["user-3"][0].state.changed = true;
  assert.deepEqual(presence.snapshot()["user-3"][0].state, {}, "snapshots are copies");
});

test("the outbox sends a burst of perSecond at once, then paces the rest", async () => {
  let now = 0;
  const sent = [];
  const outbox = new Outbox(5, (frame) => sent.push(frame), () => now);
  for (let i = 0; i < 8; i++) outbox.send(String(i));
  assert.deepEqual(sent, ["0", "1", "2", "3", "4"]);
  now = 400; // two more tokens
  await new Promise((resolve) => setTimeout(resolve, 250));
  assert.deepEqual(sent.slice(5), ["5", "6"]);
  outbox.clear();
  now = 10_000;
  await new Promise((resolve) => setTimeout(resolve, 250));
  assert.equal(sent.length, 7, "cleared frames are never sent");
});

test("Retry-After: delay-seconds or an HTTP-date from now; garbage and negatives are no hint; capped", () => {
  const now = Date.parse("2026-12-07T14:00:00Z");
  assert.equal(parseRetryAfter("1", now), 1000);
  assert.equal(parseRetryAfter(" 30 ", now), 30_000);
  assert.equal(parseRetryAfter("0", now), 0);
  assert.equal(parseRetryAfter("Mon, 07 Dec 2026 14:00:05 GMT", now), 5000);
  assert.equal(parseRetryAfter("Mon, 07 Dec 2026 15:00:05 +0100", now), 5000);
  assert.equal(parseRetryAfter("Mon, 07 Dec 2026 13:59:00 GMT", now), 0, "a date in the past: no wait");
  for (const garbage of [undefined, null, "", "soon", "-5", "1.5", "1e3", "0x10", "12 apples", "2026-12-07", "Mon, 99 Foo 2026"]) {
    assert.equal(parseRetryAfter(garbage, now), null, String(garbage));
  }
  assert.equal(parseRetryAfter("3600", now), MAX_RETRY_AFTER_MS);
  assert.equal(parseRetryAfter("9".repeat(5000), now), MAX_RETRY_AFTER_MS);
  assert.equal(parseRetryAfter("Fri, 01 Jan 9999 00:00:00 GMT", now), MAX_RETRY_AFTER_MS);
  // A frame's retry_after (seconds) in ms.
  assert.equal(frameRetryAfter(1), 1000);
  assert.equal(frameRetryAfter(0.25), 250);
  assert.equal(frameRetryAfter(1e9), MAX_RETRY_AFTER_MS);
  assert.equal(frameRetryAfter(Infinity), MAX_RETRY_AFTER_MS);
  for (const garbage of [undefined, null, -1, -Infinity, "1", true, NaN, [1]]) assert.equal(frameRetryAfter(garbage), null);
});
