// The hooks in headless Chromium (Debian's package, driven by playwright-core) against the real server:
// a live list under continuous INSERT/UPDATE/DELETE and a server restart ends equal to the SELECT; the
// original documentation's example works with the package's hook.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createServer } from "node:http";
import { once } from "node:events";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import {
  createTable,
  ServerProcess,
  sleep,
  sql,
  startDatabase,
  waitFor,
} from "../../typescript/test/support/harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];
let database, server, db, web, browser, bundle, table;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (make test does, as root)`);
  database = await startDatabase();
  db = await sql(database);
  server = await new ServerProcess(database.url).start();
  table = await createTable(db);
  await db.query("CREATE TABLE public.products (id serial PRIMARY KEY, name text, price numeric)");
  await db.query("SELECT enable_realtime('public', 'products')");
  bundle = await bundlePage();
  web = await servePage();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
});

after(async () => {
  await browser?.close();
  web?.close();
  await server?.stop();
  await db?.end();
  await database?.close();
});

async function bundlePage() {
  const result = await build({
    entryPoints: [path.join(HERE, "page/app.tsx")],
    bundle: true,
    write: false,
    format: "esm",
    jsx: "automatic",
    // A development build: StrictMode runs every effect twice, as in an application's development.
    define: { "process.env.NODE_ENV": '"development"' },
    alias: { "@fluxbase-realtime/react": path.join(HERE, "../src/index.ts") },
    logLevel: "warning",
  });
  return result.outputFiles[0].text;
}

async function servePage() {
  const http = createServer(async (request, response) => {
    const url = new URL(request.url, "http://localhost");
    if (url.pathname === "/app.js") {
      response.writeHead(200, { "content-type": "text/javascript" }).end(bundle);
    } else if (url.pathname === "/rows") {
      const name = url.searchParams.get("table");
      const { rows } = await db.query(`SELECT * FROM public."${name.replace(/"/g, '""')}" ORDER BY id`);
      await sleep(200); // changes committed after the SELECT arrive while load() is still running
      response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(rows));
    } else if (url.pathname === "/") {
      const config = JSON.stringify({ url: server.url, table });
      response.writeHead(200, { "content-type": "text/html" }).end(
        `<!doctype html><meta charset="utf-8"><div id="root"></div>` +
          `<script>window.__CONFIG = ${config}</script><script type="module" src="/app.js"></script>`,
      );
    } else {
      response.writeHead(404).end();
    }
  });
  http.listen(0, "127.0.0.1");
  await once(http, "listening");
  http.url = `http://127.0.0.1:${http.address().port}`;
  return http;
}

async function openPage(mode) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  await page.goto(`${web.url}/?mode=${mode}`);
  return { page, errors };
}

/** Random INSERT/UPDATE/DELETE, one transaction each, until stop(). */
function writer() {
  let running = true;
  let ops = 0;
  const done = (async () => {
    while (running) {
      const roll = Math.random();
      const { rows } = await db.query(`SELECT id FROM "${table}" ORDER BY random() LIMIT 1`);
      const id = rows[0]?.id;
      if (roll < 0.5 || id === undefined) {
        await db.query(`INSERT INTO "${table}" (name, n) VALUES ('w', $1)`, [ops]);
      } else if (roll < 0.8) {
        await db.query(`UPDATE "${table}" SET n = $2, name = 'u' WHERE id = $1`, [id, ops]);
      } else {
        await db.query(`DELETE FROM "${table}" WHERE id = $1`, [id]);
      }
      ops++;
      await sleep(3);
    }
  })();
  return {
    get ops() {
      return ops;
    },
    stop: async () => {
      running = false;
      await done;
    },
  };
}

const rendered = (page) => page.$$eval("#rows li", (items) => items.map((li) => JSON.parse(li.dataset.row)));
const selected = async () => byId((await db.query(`SELECT * FROM "${table}" ORDER BY id`)).rows);
// Rows as {id, name, n} in id order (jsonb's key order is not the columns').
const byId = (rows) => [...rows].map(({ id, name, n }) => ({ id, name, n })).sort((a, b) => a.id - b.id);

test("useRealtime with load(): under continuous writes and a server restart the list ends equal to the SELECT", async (t) => {
  for (let i = 0; i < 20; i++) await db.query(`INSERT INTO "${table}" (name, n) VALUES ('seed', $1)`, [i]);
  const writes = writer(); // running while the page subscribes and loads
  t.after(() => writes.stop());
  const { page, errors } = await openPage("list");
  await page.waitForSelector('#status[data-connected="true"][data-loading="false"]', { state: "attached" });
  await waitFor(() => writes.ops > 100, "writes while the page is live");
  await server.kill();
  await sleep(100);
  await server.start();
  await page.waitForSelector('#status[data-connected="true"]', { state: "attached" });
  const mark = writes.ops;
  await waitFor(() => writes.ops > mark + 100, "writes after the restart");
  await writes.stop();
  const expected = await selected();
  const same = async () => JSON.stringify(byId(await rendered(page))) === JSON.stringify(expected);
  await waitFor(same, "the list to settle");
  assert.deepEqual(byId(await rendered(page)), expected);
  assert.ok(expected.length > 0);
  const counts = await page.evaluate(() => window.__counts);
  assert.ok(counts.opens >= 2, "reconnected after the restart");
  // Re-rendering with new inline callbacks every 50 ms, and StrictMode's double effects, never
  // resubscribed: one subscribe per connection.
  assert.equal(counts.subscribes, counts.opens);
  assert.deepEqual(errors, []);
  await page.close();
});

test("a reset (the changes missed while away were pruned) loads again: the list equals the SELECT", async () => {
  const { page, errors } = await openPage("list");
  await page.waitForSelector('#status[data-connected="true"][data-loading="false"]', { state: "attached" });
  await db.query(`INSERT INTO "${table}" (name, n) VALUES ('live', -1)`);
  await waitFor(async () => (await rendered(page)).some((row) => row.n === -1), "a live change (a position to resume from)");
  await server.kill();
  await db.query(`UPDATE "${table}" SET name = 'while away'`);
  await db.query(`INSERT INTO "${table}" (name, n) VALUES ('while away', -2)`);
  // Numbered first (no feed runs while the server is down): pruning only removes numbered changes.
  await db.query("SELECT fluxbase_realtime.sequence_commits()");
  await db.query("SELECT fluxbase_realtime.prune_change_log(make_interval(secs => 0), 1, 100000)");
  await server.start();
  const expected = await selected();
  await waitFor(async () => JSON.stringify(byId(await rendered(page))) === JSON.stringify(expected), "the reload");
  assert.ok(expected.every((row) => row.name === "while away"));
  assert.deepEqual(errors, []);
  await page.close();
});

test("the original documentation's React example works with the hook", async () => {
  const { page, errors } = await openPage("docs");
  await page.getByText("Status: Connected").waitFor();
  await db.query("INSERT INTO products (name, price) VALUES ('Widget', 9.99), ('Gadget', 5)");
  await page.getByText("Widget").waitFor();
  await page.getByText("Gadget").waitFor();
  await db.query("UPDATE products SET name = 'Widget 2' WHERE name = 'Widget'");
  await page.getByText("Widget 2").waitFor();
  await db.query("DELETE FROM products WHERE name = 'Gadget'");
  await page.getByText("Gadget").waitFor({ state: "detached" });
  const names = await page.$$eval("#root > div > div", (divs) => divs.map((d) => d.textContent));
  assert.deepEqual(names, ["Status: Connected", "Widget 2"]);
  assert.deepEqual(errors, []);
  await page.close();
});

test("useBroadcast and usePresence: two pages see each other, send, and one leaves when its page closes", async () => {
  const first = await openPage("room");
  const second = await openPage("room");
  const presenceKeys = (page) =>
    page.$eval("#room", (el) => Object.keys(JSON.parse(el.dataset.presence)).length);
  await waitFor(async () => (await presenceKeys(first.page)) === 2 && (await presenceKeys(second.page)) === 2, "both present");
  await first.page.waitForSelector('#room[data-connected="true"]', { state: "attached" });
  await second.page.waitForSelector('#room[data-connected="true"]', { state: "attached" });
  await first.page.click("#send");
  await waitFor(async () => (await second.page.evaluate(() => window.__received.length)) === 1, "the broadcast");
  assert.deepEqual(await second.page.evaluate(() => window.__received), [{ from: "page" }]);
  assert.deepEqual(await first.page.evaluate(() => window.__received), [], "not its own (no self)");
  const states = await first.page.$eval("#room", (el) => Object.values(JSON.parse(el.dataset.presence)));
  assert.deepEqual(states.map((entries) => entries.map((e) => e.state)), [[{ name: "page" }], [{ name: "page" }]]);
  await second.page.close();
  await waitFor(async () => (await presenceKeys(first.page)) === 1, "the closed page left");
  assert.deepEqual(first.errors, []);
  await first.page.close();
});

test("unmounting usePresence untracks it, while the page's connection stays open", async () => {
  const first = await openPage("room");
  const second = await openPage("room");
  const presenceKeys = (page) =>
    page.$eval("#room", (el) => Object.keys(JSON.parse(el.dataset.presence)).length);
  await waitFor(async () => (await presenceKeys(first.page)) === 2 && (await presenceKeys(second.page)) === 2, "both present");
  await second.page.click("#unmount");
  await waitFor(async () => (await presenceKeys(first.page)) === 1, "the unmounted Room left");
  assert.equal(await second.page.$("#room"), null);
  assert.deepEqual(await second.page.evaluate(() => window.__counts.opens), 1, "left by untracking, not by closing");
  assert.deepEqual([...first.errors, ...second.errors], []);
  await first.page.close();
  await second.page.close();
});
