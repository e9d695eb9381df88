// The inspector page in headless Chromium (Debian's package, driven by playwright-core) against the real
// server with REALTIME_INSPECTOR=true: its data endpoint refuses anything but a service_role token, the page
// shows a row after a real INSERT (and only the rows its filter asks for), a broadcast channel's presence,
// and a test broadcast that goes out and comes back. The committed bundle must equal a fresh build.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";
import {
  createTable,
  mintToken,
  next,
  ServerProcess,
  sql,
  startDatabase,
  waitFor,
  WebSocket,
} from "../../typescript/test/support/harness.mjs";
import { RealtimeClient } from "../../typescript/dist/index.js";
import { bundle, OUTPUT } from "../build.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
// Set by `make inspector-screenshot` to refresh docs/inspector.png from the table test.
const SCREENSHOT = process.env.INSPECTOR_SCREENSHOT;
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"];
const exp = () => Math.floor(Date.now() / 1000) + 3600;
const SERVICE = mintToken({ sub: "inspector-test", role: "service_role", exp: exp() });
const USER = mintToken({ sub: "user-1", role: "authenticated", exp: exp() });
let database, server, db, browser, http, table;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (make test does, as root)`);
  database = await startDatabase();
  db = await sql(database);
  server = await new ServerProcess(database.url, { REALTIME_INSPECTOR: "true", LOG_LEVEL: "info" }).start();
  http = `http://127.0.0.1:${server.port}`;
  table = await createTable(db);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await db?.end();
  await database?.close();
});

async function openInspector(token = SERVICE) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  page.on("console", (message) => message.type() === "error" && errors.push(message.text()));
  await page.goto(`${http}/inspector`);
  await page.fill("#token", token);
  await page.click("#login button");
  return { page, errors };
}

async function tail(page, channel, filter = "") {
  await page.fill("#channel", channel);
  await page.fill("#filter", filter);
  await page.click("#tail-form button[type=submit]");
  await page.waitForSelector('#tail-status[data-state="subscribed"]', { state: "attached" });
}

const tailed = (page) =>
  page.$$eval("#changes li", (items) => items.map((li) => ({ type: li.dataset.type, body: JSON.parse(li.lastChild.textContent) })));

test("the committed bundle is a fresh build of src/ and the SDK (npm run build updates it)", async () => {
  assert.equal(await readFile(OUTPUT, "utf8"), await bundle());
});

test("the data endpoint answers only a service_role token; errors are JSON", async () => {
  const answers = {
    none: await fetch(`${http}/api/realtime/inspector`),
    forged: await fetch(`${http}/api/realtime/inspector`, {
      headers: { Authorization: `Bearer ${mintToken({ sub: "x", role: "service_role", exp: exp() }, "another-secret-".repeat(4))}` },
    }),
    user: await fetch(`${http}/api/realtime/inspector`, { headers: { Authorization: `Bearer ${USER}` } }),
    service: await fetch(`${http}/api/realtime/inspector`, { headers: { Authorization: `Bearer ${SERVICE}` } }),
  };
  const statuses = Object.fromEntries(Object.entries(answers).map(([name, response]) => [name, response.status]));
  assert.deepEqual(statuses, { none: 401, forged: 401, user: 403, service: 200 });
  for (const name of ["none", "forged", "user"]) {
    assert.match(answers[name].headers.get("content-type"), /^application\/json/);
    const body = await answers[name].json();
    assert.deepEqual(Object.keys(body).sort(), ["code", "error"]);
    assert.equal(body.code, name === "user" ? "forbidden" : "unauthorized");
  }
  const state = await answers.service.json();
  assert.equal(typeof state.connections.total, "number");
  assert.ok(Array.isArray(state.channels));
  // The page itself is public, and confined: its script and style from here, connections back here only.
  const page = await fetch(`${http}/inspector`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-security-policy"), /script-src 'self'.*connect-src 'self'/);
  assert.equal((await fetch(`${http}/inspector/..%2Fconfig.py`)).status, 404);
});

test("a wrong token is refused on the page, and nothing is shown", async () => {
  const { page, errors } = await openInspector(USER);
  await page.waitForSelector("#error:not([hidden])");
  assert.match(await page.textContent("#error"), /^403: .*service_role/);
  assert.equal(await page.isHidden("#main"), true);
  assert.deepEqual(errors.filter((e) => !String(e).includes("403")), []);
  await page.close();
});

test("tailing a table channel with a filter: a real INSERT appears, a row outside the filter does not", async () => {
  // Another connection on the table, so that the channel list has something besides the page's own.
  const other = new RealtimeClient(server.url, { token: USER, WebSocket });
  await other.channel(`table:public.${table}`).subscribe();
  const { page, errors } = await openInspector();
  await page.waitForSelector('#status[data-state="connected"]', { state: "attached" });
  await tail(page, `table:public.${table}`, "n=gte.10");
  await db.query(`INSERT INTO public."${table}" (name, n) VALUES ('outside the filter', 1)`);
  await db.query(`INSERT INTO public."${table}" (name, n) VALUES ('Widget', 42)`);
  await page.getByText('"Widget"').waitFor();
  // The sentinel (n = 42) arrived after the row outside the filter was committed: that one is not coming.
  const rows = await tailed(page);
  assert.deepEqual(rows.map(({ type, body }) => [type, body.record.name, body.record.n]), [["INSERT", "Widget", 42]]);
  // The overview, refreshed, lists the table channel with both subscriptions and the two connections' roles.
  const row = page.locator(`#channels tr[data-channel="table:public.${table}"] td:last-child`);
  await waitFor(async () => (await row.count()) === 1 && (await row.textContent()) === "2", "the channel in the overview");
  await waitFor(async () => Number(await page.textContent('#counts dd[data-name="as service_role"]')) >= 1, "roles");
  assert.ok(Number(await page.textContent('#counts dd[data-name="as authenticated"]')) >= 1);
  if (SCREENSHOT) {
    await page.setViewportSize({ width: 1100, height: 400 });
    await page.screenshot({ path: SCREENSHOT });
  }
  assert.deepEqual(errors, []);
  other.disconnect();
  await page.close();
});

test("a broadcast channel: its presence members, and a test broadcast that goes out and comes back", async () => {
  const member = new RealtimeClient(server.url, { token: USER, WebSocket });
  const received = [];
  const room = member.channel("broadcast:inspector-room").on("broadcast", "*", (message) => received.push(message));
  await room.subscribe();
  await room.track({ name: "Ann" });
  const { page, errors } = await openInspector();
  await page.waitForSelector('#status[data-state="connected"]', { state: "attached" });
  await tail(page, "broadcast:inspector-room");
  await page.waitForSelector('#presence li[data-key="user-1"]');
  assert.match(await page.textContent('#presence li[data-key="user-1"]'), /"name":"Ann"/);
  await page.fill("#event", "ping");
  await page.fill("#payload", '{"hello":"from the inspector"}');
  await page.click("#send-form button");
  await waitFor(() => received.length === 1, "the broadcast at the member");
  assert.deepEqual([received[0].event, received[0].payload], ["ping", { hello: "from the inspector" }]);
  // And back on the page (self), with the member's own message after it.
  await room.send("pong", { n: 1 });
  await page.locator("#changes li", { hasText: '"n":1' }).waitFor();
  const shown = await tailed(page);
  assert.deepEqual(shown.map(({ body }) => body).reverse(), [{ hello: "from the inspector" }, { n: 1 }]);
  await room.untrack();
  await page.waitForSelector('#presence li[data-key="user-1"]', { state: "detached" });
  assert.deepEqual(errors, []);
  member.disconnect();
  await page.close();
});

test("the token the page used is in none of the server's log lines (access lines included)", () => {
  // Access lines are on (LOG_LEVEL=info): the page's requests and its WebSocket (?token=) were logged.
  assert.ok(server.output.includes(`inspector: ${http}/inspector`), "serve prints the inspector's address");
  assert.match(server.output, /GET \/api\/realtime\/inspector/);
  assert.match(server.output, /\/realtime\?token=/);
  assert.ok(!server.output.includes(SERVICE.split(".")[2]), "the service_role token's signature in a log line");
});
