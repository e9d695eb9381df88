// The real parts for the SDK's tests: a scratch database, the server as a process (killed and restarted
// at will), a TCP proxy that cuts, stalls and delays connections, SQL, and HS256 tokens.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import pg from "pg";
import WebSocket from "ws";

export { WebSocket };
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");
export const JWT_SECRET = "js-test-secret-" + "s".repeat(50);
const VENV = process.env.VENV ?? path.join(ROOT, ".venv");
// Bounds against hanging, never measurements.
export const TIMEOUT_MS = 30_000;

/** A migrated scratch database; `close()` drops it. */
export async function startDatabase() {
  const child = spawn(path.join(VENV, "bin/python"), ["clients/typescript/test/support/scratch_database.py"], {
    cwd: ROOT,
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const [line] = await Promise.race([
    once(lines, "line"),
    once(child, "exit").then(([code]) => {
      throw new Error(`scratch_database.py exited with ${code}`);
    }),
  ]);
  const { database_url: url, params } = JSON.parse(line);
  return {
    url,
    params,
    async close() {
      child.stdin.end();
      if (child.exitCode === null) await once(child, "exit");
    },
  };
}

export async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/** The service as its own process on `port` (a fixed port, so that a restart comes back at the same URL). */
export class ServerProcess {
  constructor(databaseUrl, env = {}, port = null) {
    this.databaseUrl = databaseUrl;
    this.env = env;
    this.port = port;
    this.child = null;
    this.output = "";
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/realtime`;
  }

  async start() {
    this.port ??= await freePort();
    const env = {
      ...process.env,
      DATABASE_URL: this.databaseUrl,
      JWT_SECRET,
      LOG_LEVEL: "warning",
      ...this.env,
    };
    const args = ["serve", "--host", "127.0.0.1", "--port", String(this.port)];
    const child = spawn(path.join(VENV, "bin/fluxbase-realtime"), args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    const collect = (chunk) => (this.output = (this.output + chunk).slice(-20_000));
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}:\n${this.output}`);
      try {
        const response = await fetch(`http://127.0.0.1:${this.port}/readyz`);
        if (response.status === 200) return this;
      } catch {
        // refused while starting
      }
      if (Date.now() > deadline) throw new Error(`the server did not get ready:\n${this.output}`);
      await sleep(50);
    }
  }

  /** SIGKILL: no graceful close, as a crash. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGKILL");
    await once(child, "exit");
  }

  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await once(child, "exit");
    clearTimeout(timer);
  }
}

/** A TCP proxy in front of the server: cut every connection, stall them (no bytes either way, nothing
 * closed), delay every chunk, or refuse new connections. */
export class Proxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.sockets = new Set();
    this.delayMs = 0;
    this.stalled = new Set();
    this.refusing = false;
    this.accepted = 0;
    this.acceptedAtCut = 0;
    this.server = net.createServer((client) => this.accept(client));
  }

  async start() {
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    this.port = this.server.address().port;
    return this;
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/realtime`;
  }

  accept(client) {
    if (this.refusing) return client.destroy();
    this.accepted++;
    const upstream = net.connect(this.targetPort, "127.0.0.1");
    const pair = { client, upstream };
    this.sockets.add(pair);
    const pipe = (from, to) => {
      let chain = Promise.resolve();
      from.on("data", (chunk) => {
        if (this.stalled.has(pair)) return; // swallowed: as a network that silently drops
        if (!this.delayMs) return to.write(chunk);
        const delay = this.delayMs;
        chain = chain.then(() => sleep(delay)).then(() => to.destroyed || to.write(chunk));
      });
    };
    pipe(client, upstream);
    pipe(upstream, client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(pair);
    };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  }

  /** Reset every open connection once the client has reconnected since the previous cutLive(): a cut
   * while it is still reconnecting would cut nothing, and a test counting reconnects would be flaky. */
  async cutLive() {
    await waitFor(() => this.accepted > this.acceptedAtCut && this.sockets.size > 0, "a connection to cut");
    this.acceptedAtCut = this.accepted;
    this.cut();
  }

  /** Reset every open connection. */
  cut() {
    for (const { client, upstream } of this.sockets) {
      client.resetAndDestroy?.() ?? client.destroy();
      upstream.destroy();
    }
    this.sockets.clear();
  }

  /** Every open connection stops carrying bytes, without closing (new connections work). */
  stall() {
    for (const pair of this.sockets) this.stalled.add(pair);
  }

  async close() {
    this.cut();
    this.server.close();
  }
}

/** A node-postgres connection to the scratch database (`database` from startDatabase()). */
export async function sql(database) {
  const { host, port, user, password, dbname } = database.params;
  const client = new pg.Client({ host, port: port ? Number(port) : undefined, user, password, database: dbname });
  await client.connect();
  return client;
}

/** A fresh realtime table (id serial, name text, n integer). */
export async function createTable(db, name = `t_${Math.random().toString(36).slice(2, 10)}`) {
  await db.query(`CREATE TABLE public."${name}" (id serial PRIMARY KEY, name text, n integer)`);
  await db.query("SELECT enable_realtime('public', $1)", [name]);
  return name;
}

export function mintToken(claims, secret = JWT_SECRET) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `predicate()` is true (polling), or fails with `what` after TIMEOUT_MS. */
export async function waitFor(predicate, what = "condition", timeoutMs = TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Resolves with the first value `subscribe(resolve)` hands over. */
export function next(register, what = "event") {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), TIMEOUT_MS);
    register((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}
