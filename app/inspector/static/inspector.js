// Built by clients/inspector (npm run build) from its src/ and the SDK's: do not edit.

// ../typescript/src/backoff.ts
var DEFAULT_BACKOFF = { baseMs: 500, capMs: 2e4 };
function backoffCeiling(attempt, options = {}) {
  const base = options.baseMs ?? DEFAULT_BACKOFF.baseMs;
  const cap = options.capMs ?? DEFAULT_BACKOFF.capMs;
  return Math.min(cap, base * 2 ** Math.max(0, attempt));
}
function backoffDelay(attempt, options = {}, random = Math.random) {
  return Math.floor(random() * backoffCeiling(attempt, options));
}

// ../typescript/src/channel.ts
var Channel = class {
  constructor(host, name, options = {}) {
    this.host = host;
    this.name = name;
    this.options = options;
    this.changeHandlers = /* @__PURE__ */ new Map();
    this.broadcastHandlers = /* @__PURE__ */ new Map();
    this.presenceHandlers = /* @__PURE__ */ new Map();
    this.statusHandlers = /* @__PURE__ */ new Set();
    this.wire = null;
  }
  on(event, a, b) {
    if (event === "broadcast") add(this.broadcastHandlers, String(a), b);
    else if (event === "presence") add(this.presenceHandlers, a, b);
    else if (event === "status") this.statusHandlers.add(a);
    else add(this.changeHandlers, event, a);
    return this;
  }
  /** Remove a handler added with on() (same arguments). */
  off(event, a, b) {
    if (event === "broadcast") this.broadcastHandlers.get(String(a))?.delete(b);
    else if (event === "presence") this.presenceHandlers.get(a)?.delete(b);
    else if (event === "status") this.statusHandlers.delete(a);
    else this.changeHandlers.get(event)?.delete(a);
    return this;
  }
  /** Subscribe; resolves on the server's ack, rejects on its error. The client connects if it is not. */
  subscribe() {
    if (!this.wire) this.wire = this.host._attach(this);
    return this.wire.ready().then(() => this);
  }
  /** Stop receiving; the last Channel of a subscription unsubscribes it on the server (and untracks). */
  unsubscribe() {
    const wire = this.wire;
    this.wire = null;
    if (!wire) return Promise.resolve();
    return this.host._detach(this, wire);
  }
  /** Broadcast on a `broadcast:` channel; resolves once the server accepted it for delivery. */
  send(event, payload) {
    return this.requireWire().send(event, payload);
  }
  /** Join this channel's presence with `state` (or update it); re-tracked after every reconnect. */
  track(state) {
    return this.requireWire().track(state);
  }
  untrack() {
    return this.requireWire().untrack();
  }
  /** The channel's presences as last known. */
  presence() {
    return this.wire ? this.wire.presence.snapshot() : {};
  }
  /** The id of the last change delivered to the application (where a resume starts), or null. */
  get lastId() {
    return this.wire?.lastId ?? null;
  }
  get subscribed() {
    return this.wire?.subscribed ?? false;
  }
  requireWire() {
    if (!this.wire) throw new Error(`subscribe() to ${this.name} first`);
    return this.wire;
  }
  /** @internal */
  _deliverChange(change) {
    const typed = change;
    this.call(this.changeHandlers.get(change.type), typed);
    this.call(this.changeHandlers.get("*"), typed);
  }
  /** @internal */
  _deliverBroadcast(message) {
    this.call(this.broadcastHandlers.get(message.event), message);
    this.call(this.broadcastHandlers.get("*"), message);
  }
  /** @internal */
  _deliverPresence(changes, state) {
    for (const change of changes) {
      for (const handler of this.presenceHandlers.get(change.event) ?? []) {
        this.guard(() => handler(change.key, change.entries, state));
      }
    }
    for (const handler of this.presenceHandlers.get("sync") ?? []) this.guard(() => handler(state));
  }
  /** @internal */
  _status(status, detail) {
    for (const handler of this.statusHandlers) this.guard(() => handler(status, detail));
  }
  call(handlers, value) {
    if (!handlers) return;
    for (const handler of handlers) this.guard(() => handler(value));
  }
  guard(run) {
    try {
      run();
    } catch (error) {
      this.host._report(error);
    }
  }
};
function add(map, key, value) {
  let set = map.get(key);
  if (!set) map.set(key, set = /* @__PURE__ */ new Set());
  set.add(value);
}

// ../typescript/src/retryafter.ts
var MAX_RETRY_AFTER_MS = 6e4;
var HTTP_DATE = /^[A-Za-z]{3},\s+\d{1,2}\s+[A-Za-z]{3}\s+\d{4}\s+\d{2}:\d{2}:\d{2}\s+(GMT|UTC|[+-]\d{4})$/;
function parseRetryAfter(value, nowMs) {
  if (typeof value !== "string") return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Math.min(MAX_RETRY_AFTER_MS, Number(text) * 1e3);
  if (!HTTP_DATE.test(text)) return null;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return null;
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, at - nowMs));
}
function frameRetryAfter(value) {
  if (typeof value !== "number" || Number.isNaN(value) || value < 0) return null;
  return Math.min(MAX_RETRY_AFTER_MS, value * 1e3);
}
function onRefusal(socket, refused) {
  const emitter = socket;
  if (typeof emitter.once !== "function" || typeof emitter.close !== "function") return;
  emitter.once("unexpected-response", (_request, response) => {
    const header = response?.headers?.["retry-after"];
    refused(parseRetryAfter(Array.isArray(header) ? header[0] : header, Date.now()));
    emitter.close();
  });
}

// ../typescript/src/messages.ts
var RealtimeError = class _RealtimeError extends Error {
  constructor(message, code, channel, retryAfterMs) {
    super(message);
    this.name = "RealtimeError";
    this.code = code;
    this.channel = channel;
    this.retryAfterMs = retryAfterMs;
  }
  static from(frame) {
    const retryAfterMs = frameRetryAfter(frame.retry_after) ?? void 0;
    return new _RealtimeError(String(frame.error ?? "error"), frame.code, frame.channel, retryAfterMs);
  }
};

// ../typescript/src/outbox.ts
var Outbox = class {
  constructor(perSecond, write, now = Date.now) {
    this.perSecond = perSecond;
    this.write = write;
    this.now = now;
    this.queue = [];
    this.timer = null;
    this.tokens = perSecond;
    this.last = now();
  }
  send(frame) {
    this.queue.push(frame);
    this.flush();
  }
  /** Forget what is queued (the socket it was meant for is gone). */
  clear() {
    this.queue = [];
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
  flush() {
    const now = this.now();
    this.tokens = Math.min(this.perSecond, this.tokens + (now - this.last) / 1e3 * this.perSecond);
    this.last = now;
    while (this.queue.length && this.tokens >= 1) {
      this.tokens -= 1;
      this.write(this.queue.shift());
    }
    if (this.queue.length && this.timer === null) {
      const wait = Math.ceil((1 - this.tokens) / this.perSecond * 1e3);
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush();
      }, wait);
    }
  }
};

// ../typescript/src/jwt.ts
function tokenExpiresAt(token2) {
  const part = token2.split(".")[1];
  if (!part) return null;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - base64.length % 4) % 4);
    const claims = JSON.parse(decodeBase64(padded));
    if (claims && typeof claims === "object" && "exp" in claims) {
      const exp = claims.exp;
      if (typeof exp === "number" && Number.isFinite(exp)) return exp * 1e3;
    }
  } catch {
    return null;
  }
  return null;
}
function decodeBase64(text) {
  const binary = atob(text);
  const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}
function refreshDelay(expiresAt, now, marginMs) {
  const left = expiresAt - now;
  if (left <= 0) return 0;
  return Math.max(0, left - Math.min(marginMs, left / 2));
}

// ../typescript/src/refresh.ts
var TokenRefresh = class {
  constructor(options, current) {
    this.options = options;
    this.current = current;
    this.timer = null;
    this.stopped = false;
    this.schedule();
  }
  stop() {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
  schedule() {
    const expiresAt = tokenExpiresAt(this.current);
    if (expiresAt === null || this.stopped) return;
    const delay = refreshDelay(expiresAt, Date.now(), this.options.marginMs);
    this.timer = setTimeout(() => void this.refresh(expiresAt), delay);
  }
  async refresh(expiresAt) {
    this.timer = null;
    let token2 = null;
    try {
      token2 = await this.options.fetch();
    } catch (error) {
      this.options.report(error);
    }
    if (this.stopped) return;
    if (token2 && token2 !== this.current) {
      try {
        await this.options.send(token2);
        if (this.stopped) return;
        this.current = token2;
        this.schedule();
        return;
      } catch (error) {
        if (this.stopped) return;
        this.options.report(error);
      }
    }
    const left = expiresAt - Date.now();
    if (left > 0) this.timer = setTimeout(() => void this.refresh(expiresAt), Math.max(50, left / 4));
  }
};

// ../typescript/src/requests.ts
var Requests = class {
  constructor() {
    this.pending = /* @__PURE__ */ new Map();
    this.refs = 0;
  }
  /** Send `message` with a fresh ref through `write`; `answer` is called as the reply is read. */
  send(write, message, answer) {
    const ref = `${++this.refs}`;
    return new Promise((resolve, reject) => {
      this.pending.set(ref, { resolve, reject, answer });
      write(JSON.stringify({ ...message, ref }));
    });
  }
  /** Settle the request this `ack` or `error` answers; false when it answers none of ours. */
  settle(frame) {
    if (frame.ref === void 0 || frame.type !== "ack" && frame.type !== "error") return false;
    const ref = String(frame.ref);
    const pending = this.pending.get(ref);
    if (!pending) return false;
    this.pending.delete(ref);
    if (frame.type === "ack") {
      pending.answer?.ack(frame);
      pending.resolve(frame);
    } else {
      const error = RealtimeError.from(frame);
      pending.answer?.error(error);
      pending.reject(error);
    }
    return true;
  }
  /** The socket is gone: every request fails with `error`. */
  failAll(error) {
    const failed = [...this.pending.values()];
    this.pending.clear();
    for (const pending of failed) {
      pending.answer?.error(error);
      pending.reject(error);
    }
  }
};

// ../typescript/src/ids.ts
function isAfter(id, last) {
  if (last === null) return true;
  if (id.length !== last.length) return id.length > last.length;
  return id > last;
}
function topLevelId(text) {
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      const start = i;
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 92) i++;
        else if (d === 34) break;
      }
      if (depth === 1 && expectKey && text.slice(start, i + 1) === '"id"') {
        const match = /^\s*:\s*"?(\d+)/.exec(text.slice(i + 1, i + 40));
        return match ? match[1] : null;
      }
      expectKey = false;
    } else if (c === 123 || c === 91) {
      depth++;
      expectKey = c === 123 && depth === 1;
    } else if (c === 125 || c === 93) {
      depth--;
    } else if (c === 44) {
      expectKey = depth === 1;
    }
  }
  return null;
}
function frameId(value, text) {
  if (typeof value === "string" && /^\d+$/.test(value)) return value;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) return null;
  return Number.isSafeInteger(value) ? String(value) : topLevelId(text);
}

// ../typescript/src/presence.ts
var Presence = class {
  constructor() {
    this.state = /* @__PURE__ */ new Map();
  }
  /** The current presences (a deep copy: the application may keep or change it). */
  snapshot() {
    const out = {};
    for (const [key, entries] of this.state) out[key] = entries;
    return JSON.parse(JSON.stringify(out));
  }
  clear() {
    this.state.clear();
  }
  /** Replace the state by a `presence_state`; returns what changed against the previous one (after a
   * reconnect, the application sees who left and who came while it was away). */
  replace(presences) {
    const before = this.state;
    this.state = /* @__PURE__ */ new Map();
    for (const [key, entries] of Object.entries(presences ?? {})) {
      if (Array.isArray(entries) && entries.length) this.state.set(key, entries.map((e) => ({ ...e })));
    }
    const changes = [];
    for (const [key, entries] of this.state) {
      const old = new Map((before.get(key) ?? []).map((e) => [e.presence_id, e]));
      const joins = entries.filter((e) => !old.has(e.presence_id));
      const updates = entries.filter(
        (e) => old.has(e.presence_id) && JSON.stringify(old.get(e.presence_id)?.state) !== JSON.stringify(e.state)
      );
      if (joins.length) changes.push({ event: "join", key, entries: joins });
      if (updates.length) changes.push({ event: "update", key, entries: updates });
    }
    for (const [key, entries] of before) {
      const now = new Set((this.state.get(key) ?? []).map((e) => e.presence_id));
      const leaves = entries.filter((e) => !now.has(e.presence_id));
      if (leaves.length) changes.push({ event: "leave", key, entries: leaves });
    }
    return changes;
  }
  /** Apply a `presence_diff`; returns its changes in the order join, update, leave. */
  apply(joins = {}, updates = {}, leaves = {}) {
    const changes = [];
    for (const [key, entries] of Object.entries(joins)) {
      const list = this.state.get(key) ?? [];
      for (const entry of entries) {
        const at = list.findIndex((e) => e.presence_id === entry.presence_id);
        if (at >= 0) list[at] = { ...entry };
        else list.push({ ...entry });
      }
      this.state.set(key, list);
      changes.push({ event: "join", key, entries });
    }
    for (const [key, entries] of Object.entries(updates)) {
      const list = this.state.get(key) ?? [];
      for (const entry of entries) {
        const at = list.findIndex((e) => e.presence_id === entry.presence_id);
        if (at >= 0) list[at] = { ...entry };
        else list.push({ ...entry });
      }
      this.state.set(key, list);
      changes.push({ event: "update", key, entries });
    }
    for (const [key, entries] of Object.entries(leaves)) {
      const gone = new Set(entries.map((e) => e.presence_id));
      const list = (this.state.get(key) ?? []).filter((e) => !gone.has(e.presence_id));
      if (list.length) this.state.set(key, list);
      else this.state.delete(key);
      changes.push({ event: "leave", key, entries });
    }
    return changes;
  }
};

// ../typescript/src/subscription.ts
var CONNECTION_CLOSED = "connection_closed";
function subscriptionKey(channel, subscription) {
  return `${channel}\0${subscription ?? ""}`;
}
var Subscription = class {
  constructor(transport, channel, options) {
    this.transport = transport;
    this.channel = channel;
    this.options = options;
    this.views = /* @__PURE__ */ new Set();
    this.presence = new Presence();
    this.state = "idle";
    this.everAcked = false;
    this.waiters = [];
    this.tracked = null;
    this.trackWaiters = [];
    this.retries = 0;
    this.retryTimer = null;
    this.lastId = options.since ?? null;
  }
  get isTable() {
    return this.channel.startsWith("table:");
  }
  get subscribed() {
    return this.state === "subscribed";
  }
  /** Resolves once the server has acked the subscription (now, if it has). */
  ready() {
    if (this.state === "subscribed") return Promise.resolve();
    if (this.state === "ended") return Promise.reject(new RealtimeError("the channel is unsubscribed"));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }
  /** The socket is open (again): subscribe, from the last delivered id when there is one. */
  opened() {
    if (this.state === "ended") return;
    this.subscribe();
  }
  /** The socket is gone: everything is re-sent on the next one. */
  closed() {
    if (this.state !== "ended") this.state = "idle";
    this.clearRetry();
  }
  subscribe() {
    if (this.state === "ended" || !this.transport.isOpen()) return;
    this.clearRetry();
    this.state = "subscribing";
    const resuming = this.everAcked;
    const since = this.lastId;
    const message = { type: "subscribe", channel: this.channel };
    for (const key of ["filter", "events", "columns", "subscription", "self"]) {
      if (this.options[key] !== void 0) message[key] = this.options[key];
    }
    if (since !== null) message.since = since;
    this.transport.request(message, {
      ack: (frame) => {
        if (this.state !== "subscribing") return;
        if (this.lastId === null && typeof frame.since === "string" && /^\d+$/.test(frame.since)) {
          this.lastId = frame.since;
        }
        this.state = "subscribed";
        this.everAcked = true;
        this.retries = 0;
        for (const waiter of this.waiters.splice(0)) waiter.resolve();
        if (!resuming) this.emit("subscribed");
        else if (since !== null) this.emit("resumed");
        else this.emit(this.isTable ? "reset" : "resumed", { reason: "position_unknown" });
        if (this.tracked) this.sendTrack();
      },
      error: (error) => {
        if (this.state !== "subscribing") return;
        this.state = "idle";
        if (error instanceof RealtimeError && error.code === CONNECTION_CLOSED) return;
        this.emit("error", error);
        const retryAfterMs = error instanceof RealtimeError ? error.retryAfterMs : void 0;
        if (!this.everAcked && retryAfterMs === void 0) {
          for (const waiter of this.waiters.splice(0)) waiter.reject(error);
          return;
        }
        this.scheduleRetry(retryAfterMs);
      }
    }).catch(() => void 0);
  }
  /** The last view left: stop, and tell the server when it is listening. */
  end() {
    const wasLive = this.state === "subscribed" || this.state === "subscribing";
    this.state = "ended";
    this.clearRetry();
    const error = new RealtimeError("the channel was unsubscribed");
    for (const waiter of [...this.waiters.splice(0), ...this.trackWaiters.splice(0)]) waiter.reject(error);
    if (!wasLive || !this.transport.isOpen()) return Promise.resolve();
    const message = { type: "unsubscribe", channel: this.channel };
    if (this.options.subscription !== void 0) message.subscription = this.options.subscription;
    return this.transport.request(message).then(
      () => void 0,
      () => void 0
      // not subscribed any more, or the socket closed: either way it is over
    );
  }
  /** A frame for this subscription (routed by channel and subscription id). */
  handle(frame, text) {
    switch (frame.type) {
      case "broadcast":
        return this.broadcast(frame, text);
      case "presence_state":
        return this.emitPresence(this.presence.replace(frame.presences ?? {}));
      case "presence_diff":
        return this.emitPresence(this.presence.apply(frame.joins, frame.updates, frame.leaves));
      case "error":
        return this.error(frame);
    }
  }
  broadcast(frame, text) {
    if (this.state !== "subscribed") return;
    const id = frameId(frame.id, text);
    if (id !== null && !isAfter(id, this.lastId)) return;
    let truncatedPartition = void 0;
    try {
      if (this.isTable) {
        const payload = frame.payload ?? {};
        const change = { ...payload, id: id ?? "", channel: this.channel };
        if (frame.subscription !== void 0) change.subscription = frame.subscription;
        if (change.type === "TRUNCATE" && change.partition) truncatedPartition = change.partition;
        for (const view of this.views) view._deliverChange(change);
      } else {
        const message = {
          channel: this.channel,
          event: String(frame.event ?? ""),
          payload: frame.payload
        };
        if (id !== null) message.id = id;
        for (const view of this.views) view._deliverBroadcast(message);
      }
    } finally {
      if (id !== null) this.lastId = id;
    }
    if (truncatedPartition !== void 0) {
      this.emit("reset", { reason: "partition_truncated", partition: truncatedPartition });
    }
  }
  error(frame) {
    const error = RealtimeError.from(frame);
    switch (frame.code) {
      case "replay_gap":
        this.lastId = null;
        this.emit("reset", error);
        return;
      case "subscribe_failed":
        this.emit("error", error);
        if (this.state === "subscribed") this.state = "idle";
        this.scheduleRetry(error.retryAfterMs);
        return;
      case "forbidden":
        if (this.state === "subscribed") {
          this.state = "idle";
          this.emit("closed", error);
          return;
        }
        this.emit("error", error);
        return;
      default:
        this.emit("error", error);
    }
  }
  /** A broadcast; resolves on the server's ack (sent once the subscription is acked). */
  async send(event, payload) {
    await this.ready();
    await this.transport.request({ type: "broadcast", channel: this.channel, event, payload });
  }
  track(state) {
    this.tracked = { state };
    const done = new Promise((resolve, reject) => this.trackWaiters.push({ resolve, reject }));
    if (this.state === "subscribed") this.sendTrack();
    return done;
  }
  untrack() {
    this.tracked = null;
    for (const waiter of this.trackWaiters.splice(0)) waiter.resolve();
    if (this.state !== "subscribed") return Promise.resolve();
    return this.transport.request({ type: "untrack", channel: this.channel }).then(() => void 0);
  }
  sendTrack() {
    const tracked = this.tracked;
    if (!tracked) return;
    this.transport.request({ type: "track", channel: this.channel, state: tracked.state }).then(
      () => {
        if (this.tracked !== tracked) return;
        for (const waiter of this.trackWaiters.splice(0)) waiter.resolve();
      },
      (error) => {
        if (error instanceof RealtimeError && error.code === CONNECTION_CLOSED) return;
        if (this.tracked === tracked) this.tracked = null;
        for (const waiter of this.trackWaiters.splice(0)) waiter.reject(error);
      }
    );
  }
  /** Subscribe again after a backoff, on top of the `retryAfterMs` a refusal for load asked for. */
  scheduleRetry(retryAfterMs = 0) {
    if (this.retryTimer !== null || this.state === "ended") return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.subscribe();
    }, retryAfterMs + this.transport.retryDelay(this.retries++));
  }
  clearRetry() {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }
  emitPresence(changes) {
    const state = this.presence.snapshot();
    for (const view of this.views) view._deliverPresence(changes, state);
  }
  emit(status, detail) {
    for (const view of this.views) {
      try {
        view._status(status, detail);
      } catch (error) {
        this.transport.report(error);
      }
    }
  }
};

// ../typescript/src/client.ts
var OPEN = 1;
var RealtimeClient = class {
  constructor(url, options = {}) {
    this.url = url;
    this.subscriptions = /* @__PURE__ */ new Map();
    this.requests = new Requests();
    this.listeners = { status: /* @__PURE__ */ new Set(), error: /* @__PURE__ */ new Set() };
    this.socket = null;
    this.generation = 0;
    this.wanted = false;
    this.attempt = 0;
    this.reconnectTimer = null;
    this.watchdog = null;
    this.refresh = null;
    this.lastFrameAt = 0;
    this.tokenExpired = false;
    /** The Retry-After of the current attempt's refused handshake (readable with `ws` only), in ms. */
    this.refusedRetryAfterMs = null;
    this.currentToken = null;
    this.outbox = null;
    this.onOnline = () => this.reconnectNow();
    this.status = "idle";
    this.options = options;
    const impl = options.WebSocket ?? globalThis.WebSocket;
    if (!impl) {
      throw new Error(
        "no WebSocket implementation: pass one as { WebSocket } (in Node 20, the 'ws' package's WebSocket)"
      );
    }
    this.WebSocketImpl = impl;
  }
  /** A channel: `table:{schema}.{table}` or `broadcast:{name}`. Nothing is sent until subscribe(). */
  channel(name, options = {}) {
    return new Channel(this, name, options);
  }
  on(event, handler) {
    this.listeners[event].add(handler);
    return () => this.listeners[event].delete(handler);
  }
  /** Connect (and keep reconnecting) until disconnect(). Channels connect the client themselves. */
  connect() {
    if (this.wanted) return;
    this.wanted = true;
    this.events()?.addEventListener("online", this.onOnline);
    void this.open();
  }
  /** Close the socket and stop reconnecting; subscriptions are forgotten. */
  disconnect() {
    this.wanted = false;
    this.events()?.removeEventListener("online", this.onOnline);
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    for (const subscription of this.subscriptions.values()) void subscription.end();
    this.subscriptions.clear();
    this.drop(1e3, "client disconnect");
    this.setStatus("idle", {});
  }
  /** Reconnect now (e.g. the network came back), skipping the backoff wait. */
  reconnectNow() {
    if (!this.wanted || this.status === "open" || this.status === "connecting") return;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.attempt = 0;
    void this.open();
  }
  // The connection
  events() {
    if (this.options.onlineEvents !== void 0) return this.options.onlineEvents;
    const global = globalThis;
    return global && typeof global.addEventListener === "function" ? global : null;
  }
  async open() {
    const generation = ++this.generation;
    this.setStatus("connecting", {});
    let token2;
    try {
      token2 = await this.token();
    } catch (error) {
      this.report(error);
      if (generation === this.generation) this.closed(generation, 4001, "getToken failed");
      return;
    }
    if (generation !== this.generation || !this.wanted) return;
    this.currentToken = token2;
    let socket;
    try {
      socket = new this.WebSocketImpl(withToken(this.url, token2));
    } catch (error) {
      this.report(error);
      this.closed(generation, 4002, "could not open a WebSocket");
      return;
    }
    this.socket = socket;
    this.refusedRetryAfterMs = null;
    onRefusal(socket, (ms) => {
      if (generation === this.generation) this.refusedRetryAfterMs = ms;
    });
    this.lastFrameAt = Date.now();
    this.startWatchdog();
    socket.onopen = () => generation === this.generation && this.opened(generation);
    socket.onmessage = (event) => generation === this.generation && this.frame(String(event.data));
    socket.onclose = (event) => generation === this.generation && this.closed(generation, event.code, event.reason);
    socket.onerror = () => void 0;
  }
  async token() {
    if (this.options.getToken) return await this.options.getToken() ?? null;
    return this.options.token ?? null;
  }
  opened(generation) {
    const socket = this.socket;
    if (!socket) return;
    this.tokenExpired = false;
    this.lastFrameAt = Date.now();
    this.outbox = new Outbox(this.options.messagesPerSecond ?? 40, (frame) => {
      if (generation === this.generation && socket.readyState === OPEN) socket.send(frame);
    });
    if (this.currentToken && this.options.getToken) {
      this.refresh = new TokenRefresh(
        {
          fetch: () => this.token(),
          send: (token2) => this.request({ type: "access_token", token: token2 }),
          marginMs: this.options.tokenRefreshMarginMs ?? 3e4,
          report: (error) => this.report(error)
        },
        this.currentToken
      );
    }
    this.setStatus("open", {});
    for (const subscription of this.subscriptions.values()) subscription.opened();
  }
  /** The socket closed (or was given up on): fail what awaited it, and come back after a backoff delay. */
  closed(generation, code, reason) {
    if (generation !== this.generation) return;
    this.generation++;
    this.socket = null;
    this.stopTimers();
    const error = new RealtimeError(`the connection closed (${code}${reason ? ` ${reason}` : ""})`, CONNECTION_CLOSED);
    this.requests.failAll(error);
    for (const subscription of this.subscriptions.values()) subscription.closed();
    if (!this.wanted) return;
    const retryAfter = this.refusedRetryAfterMs ?? 0;
    const delay = this.tokenExpired ? 0 : retryAfter + backoffDelay(this.attempt++, this.options.backoff, this.options.random);
    this.tokenExpired = false;
    this.refusedRetryAfterMs = null;
    this.setStatus("closed", { code, reason, retryInMs: delay });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.wanted) void this.open();
    }, delay);
  }
  /** Close the current socket without waiting for its close handshake (a dead peer never answers). */
  drop(code, reason) {
    const socket = this.socket;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      socket.onerror = () => void 0;
      try {
        socket.close(code >= 4e3 || code === 1e3 ? code : 1e3, reason);
      } catch {
      }
    }
    this.closed(this.generation, code, reason);
  }
  stopTimers() {
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.refresh?.stop();
    this.refresh = null;
    this.watchdog = null;
    this.outbox?.clear();
    this.outbox = null;
  }
  startWatchdog() {
    const interval = this.options.heartbeatIntervalMs ?? 3e4;
    const limit = interval * (this.options.heartbeatTolerance ?? 2.5);
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastFrameAt > limit) this.drop(4e3, "no heartbeat");
    }, Math.max(10, interval / 4));
  }
  // Frames
  frame(text) {
    this.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return this.report(new Error("the server sent a frame that is not JSON"));
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "ack" || frame.type === "heartbeat") this.attempt = 0;
    if (this.requests.settle(frame)) return;
    if (frame.type === "heartbeat" || frame.type === "ack") return;
    if (typeof frame.channel === "string") {
      const subscription = this.subscriptions.get(subscriptionKey(frame.channel, frame.subscription));
      if (subscription) return subscription.handle(frame, text);
      if (frame.type !== "error") return;
      const all = [...this.subscriptions.values()].filter((s) => s.channel === frame.channel);
      if (frame.subscription === void 0 && all.length) for (const s of all) s.handle(frame, text);
      else this.report(RealtimeError.from(frame));
      return;
    }
    if (frame.type === "error") {
      if (frame.code === "token_expired") this.tokenExpired = true;
      this.report(RealtimeError.from(frame));
    }
  }
  // Transport (for subscriptions)
  isOpen() {
    return this.status === "open" && this.outbox !== null;
  }
  request(message, answer) {
    const outbox = this.outbox;
    if (!outbox || this.status !== "open") {
      const error = new RealtimeError("not connected", CONNECTION_CLOSED);
      answer?.error(error);
      return Promise.reject(error);
    }
    return this.requests.send((frame) => outbox.send(frame), message, answer);
  }
  retryDelay(attempt) {
    return backoffDelay(attempt, this.options.backoff, this.options.random);
  }
  report(error) {
    for (const handler of this.listeners.error) {
      try {
        handler(error);
      } catch {
      }
    }
  }
  // Channels (internal)
  /** @internal */
  _attach(channel) {
    const key = subscriptionKey(channel.name, channel.options.subscription);
    let subscription = this.subscriptions.get(key);
    if (subscription && !sameOptions(subscription.options, channel.options)) {
      throw new Error(
        `${channel.name} is already subscribed with other options: give each a distinct 'subscription' id`
      );
    }
    if (!subscription) {
      subscription = new Subscription(this, channel.name, channel.options);
      this.subscriptions.set(key, subscription);
      subscription.views.add(channel);
      this.connect();
      subscription.subscribe();
    } else {
      subscription.views.add(channel);
    }
    return subscription;
  }
  /** @internal */
  _detach(channel, subscription) {
    subscription.views.delete(channel);
    if (subscription.views.size) return Promise.resolve();
    const key = subscriptionKey(subscription.channel, subscription.options.subscription);
    if (this.subscriptions.get(key) === subscription) this.subscriptions.delete(key);
    return subscription.end();
  }
  /** @internal */
  _report(error) {
    this.report(error);
  }
  setStatus(status, detail) {
    this.status = status;
    for (const handler of this.listeners.status) {
      try {
        handler(status, detail);
      } catch (error) {
        this.report(error);
      }
    }
  }
};
function withToken(url, token2) {
  if (!token2) return url;
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token2)}`;
}
function sameOptions(a, b) {
  const pick = (o) => JSON.stringify([o.filter, o.events, o.columns, o.self]);
  return pick(a) === pick(b);
}

// src/inspector.ts
var REFRESH_MS = 2e3;
var MAX_ITEMS = 200;
var element = (id) => {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found;
};
var ui = {
  login: element("login"),
  token: element("token"),
  status: element("status"),
  error: element("error"),
  main: element("main"),
  counts: element("counts"),
  channels: element("channels"),
  channelsNote: element("channels-note"),
  tailForm: element("tail-form"),
  channel: element("channel"),
  filter: element("filter"),
  stop: element("stop"),
  tailStatus: element("tail-status"),
  room: element("room"),
  presence: element("presence"),
  presenceCount: element("presence-count"),
  sendForm: element("send-form"),
  event: element("event"),
  payload: element("payload"),
  changes: element("changes")
};
var token = "";
var client = null;
var refreshTimer = null;
var tailed = null;
function setText(target, text, state) {
  target.textContent = text;
  if (state !== void 0) target.dataset.state = state;
}
function showError(message) {
  ui.error.hidden = message === null;
  ui.error.textContent = message ?? "";
}
async function fetchState() {
  const response = await fetch("/api/realtime/inspector", {
    headers: { Authorization: `Bearer ${token}` },
    cache: "no-store"
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${body.error ?? response.statusText}`);
  return body;
}
function renderState(state) {
  const rows = [
    ["connections", String(state.connections.total)],
    ...Object.entries(state.connections.by_role).map(([role, n]) => [`  as ${role}`, String(n)]),
    ...Object.entries(state.kinds).map(([kind, c]) => [
      `${kind} channels`,
      `${c.channels} (${c.subscriptions} subscriptions)`
    ]),
    ["last change id", String(state.last_change_id)],
    ["capture", state.capture],
    ["bus", `${state.bus_transport} (${state.bus_healthy ? "healthy" : "unhealthy"})`]
  ];
  ui.counts.replaceChildren(
    ...rows.flatMap(([name, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dd.dataset.name = name.trim();
      return [dt, dd];
    })
  );
  ui.channels.tBodies[0].replaceChildren(
    ...state.channels.map((entry) => {
      const tr = document.createElement("tr");
      tr.dataset.channel = entry.channel;
      for (const text of [entry.channel, entry.kind, String(entry.subscriptions)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      return tr;
    })
  );
  ui.channelsNote.textContent = state.channels_listed < state.channels_total ? `the ${state.channels_listed} busiest of ${state.channels_total} channels` : `${state.channels_total} channel${state.channels_total === 1 ? "" : "s"}`;
}
async function refresh() {
  try {
    renderState(await fetchState());
    showError(null);
  } catch (error) {
    showError(`stats: ${error.message}`);
  }
  refreshTimer = setTimeout(() => void refresh(), REFRESH_MS);
}
function addEntry(type, heading, body, id) {
  const li = document.createElement("li");
  li.dataset.type = type;
  if (id !== void 0) li.dataset.id = id;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = heading;
  const pre = document.createElement("div");
  pre.textContent = JSON.stringify(body);
  li.append(meta, pre);
  ui.changes.prepend(li);
  while (ui.changes.childElementCount > MAX_ITEMS) ui.changes.lastElementChild?.remove();
}
function renderPresence(state) {
  const keys = Object.keys(state).sort();
  ui.presenceCount.textContent = String(keys.length);
  ui.presence.replaceChildren(
    ...keys.map((key) => {
      const li = document.createElement("li");
      li.dataset.key = key;
      li.textContent = `${key}: ${state[key].map((entry) => JSON.stringify(entry.state)).join(", ")}`;
      return li;
    })
  );
}
async function stopTail() {
  const channel = tailed;
  tailed = null;
  ui.stop.disabled = true;
  ui.room.hidden = true;
  ui.presence.replaceChildren();
  ui.presenceCount.textContent = "0";
  setText(ui.tailStatus, "", "idle");
  await channel?.unsubscribe();
}
async function startTail(name, filter) {
  await stopTail();
  if (!client) return;
  const isBroadcast = name.startsWith("broadcast:");
  const channel = client.channel(name, isBroadcast ? { self: true } : filter ? { filter } : {});
  tailed = channel;
  ui.changes.replaceChildren();
  channel.on("status", (status) => {
    if (tailed === channel) setText(ui.tailStatus, `${name}: ${status}`, status);
  });
  if (isBroadcast) {
    channel.on(
      "broadcast",
      "*",
      (message) => addEntry("broadcast", `${message.id ? `#${message.id} ` : ""}${message.event}`, message.payload, message.id)
    ).on("presence", "sync", (state) => renderPresence(state));
  } else {
    channel.on(
      "*",
      (change) => addEntry(
        change.type,
        `#${change.id} ${change.type} ${change.schema}.${change.table}`,
        change.type === "DELETE" ? { old_record: change.old_record } : { record: change.record, old_record: change.old_record },
        change.id
      )
    );
  }
  setText(ui.tailStatus, `${name}: subscribing`, "subscribing");
  ui.stop.disabled = false;
  try {
    await channel.subscribe();
    if (isBroadcast && tailed === channel) {
      ui.room.hidden = false;
      renderPresence(channel.presence());
    }
  } catch (error) {
    if (tailed === channel) {
      tailed = null;
      ui.stop.disabled = true;
      setText(ui.tailStatus, `${name}: ${error.message}`, "error");
    }
  }
}
async function signIn(candidate) {
  token = candidate;
  try {
    renderState(await fetchState());
  } catch (error) {
    token = "";
    setText(ui.status, "signed out", "error");
    showError(error.message);
    return;
  }
  showError(null);
  ui.token.value = "";
  if (refreshTimer !== null) clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => void refresh(), REFRESH_MS);
  await stopTail();
  client?.disconnect();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  client = new RealtimeClient(`${scheme}://${location.host}/realtime`, { token });
  client.on("status", (status) => {
    const shown = status === "open" ? "connected" : status;
    setText(ui.status, shown, shown);
  });
  client.on("error", (error) => showError(`realtime: ${error.message ?? String(error)}`));
  client.connect();
  ui.main.hidden = false;
}
ui.login.addEventListener("submit", (event) => {
  event.preventDefault();
  void signIn(ui.token.value.trim());
});
ui.tailForm.addEventListener("submit", (event) => {
  event.preventDefault();
  void startTail(ui.channel.value.trim(), ui.filter.value.trim());
});
ui.stop.addEventListener("click", () => void stopTail());
ui.sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const channel = tailed;
  if (!channel) return;
  let payload;
  try {
    payload = ui.payload.value.trim() ? JSON.parse(ui.payload.value) : null;
  } catch {
    showError("the payload is not JSON");
    return;
  }
  channel.send(ui.event.value.trim(), payload).then(
    () => showError(null),
    (error) => showError(`broadcast: ${error.message}`)
  );
});
