/** RealtimeClient: one WebSocket to a fluxbase-realtime server, multiplexing every channel; it reconnects
 * for as long as it is wanted, resumes each subscription from the last change delivered, keeps its token
 * fresh and notices a silent connection by the missing heartbeats. */

import { backoffDelay } from "./backoff.js";
import { Channel } from "./channel.js";
import { RealtimeError, type ServerFrame } from "./messages.js";
import { Outbox } from "./outbox.js";
import { TokenRefresh } from "./refresh.js";
import { Requests } from "./requests.js";
import { onRefusal } from "./retryafter.js";
import {
  CONNECTION_CLOSED,
  Subscription,
  subscriptionKey,
  type Answer,
  type SubscribeOptions,
  type Transport,
} from "./subscription.js";
import type {
  ClientStatus,
  RealtimeClientOptions,
  StatusDetail,
  WebSocketConstructor,
  WebSocketLike,
} from "./options.js";

type ClientEvent = "status" | "error";

const OPEN = 1;

export class RealtimeClient implements Transport {
  private readonly options: RealtimeClientOptions;
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly subscriptions = new Map<string, Subscription>();
  private readonly requests = new Requests();
  private readonly listeners = { status: new Set<Function>(), error: new Set<Function>() };
  private socket: WebSocketLike | null = null;
  private generation = 0;
  private wanted = false;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  private refresh: TokenRefresh | null = null;
  private lastFrameAt = 0;
  private tokenExpired = false;
  /** The Retry-After of the current attempt's refused handshake (readable with `ws` only), in ms. */
  private refusedRetryAfterMs: number | null = null;
  private currentToken: string | null = null;
  private outbox: Outbox | null = null;
  private readonly onOnline = () => this.reconnectNow();
  status: ClientStatus = "idle";

  constructor(
    readonly url: string,
    options: RealtimeClientOptions = {},
  ) {
    this.options = options;
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!impl) {
      throw new Error(
        "no WebSocket implementation: pass one as { WebSocket } (in Node 20, the 'ws' package's WebSocket)",
      );
    }
    this.WebSocketImpl = impl;
  }

  /** A channel: `table:{schema}.{table}` or `broadcast:{name}`. Nothing is sent until subscribe(). */
  channel<Row = Record<string, unknown>>(name: string, options: SubscribeOptions = {}): Channel<Row> {
    return new Channel<Row>(this, name, options);
  }

  on(event: "status", handler: (status: ClientStatus, detail: StatusDetail) => void): () => void;
  on(event: "error", handler: (error: unknown) => void): () => void;
  on(event: ClientEvent, handler: Function): () => void {
    this.listeners[event].add(handler);
    return () => this.listeners[event].delete(handler);
  }

  /** Connect (and keep reconnecting) until disconnect(). Channels connect the client themselves. */
  connect(): void {
    if (this.wanted) return;
    this.wanted = true;
    this.events()?.addEventListener("online", this.onOnline);
    void this.open();
  }

  /** Close the socket and stop reconnecting; subscriptions are forgotten. */
  disconnect(): void {
    this.wanted = false;
    this.events()?.removeEventListener("online", this.onOnline);
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    for (const subscription of this.subscriptions.values()) void subscription.end();
    this.subscriptions.clear();
    this.drop(1000, "client disconnect");
    this.setStatus("idle", {});
  }

  /** Reconnect now (e.g. the network came back), skipping the backoff wait. */
  reconnectNow(): void {
    if (!this.wanted || this.status === "open" || this.status === "connecting") return;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.attempt = 0;
    void this.open();
  }

  // The connection

  private events(): RealtimeClientOptions["onlineEvents"] {
    if (this.options.onlineEvents !== undefined) return this.options.onlineEvents;
    const global = globalThis as unknown as RealtimeClientOptions["onlineEvents"];
    return global && typeof global.addEventListener === "function" ? global : null;
  }

  private async open(): Promise<void> {
    const generation = ++this.generation;
    this.setStatus("connecting", {});
    let token: string | null;
    try {
      token = await this.token();
    } catch (error) {
      this.report(error);
      if (generation === this.generation) this.closed(generation, 4001, "getToken failed");
      return;
    }
    if (generation !== this.generation || !this.wanted) return;
    this.currentToken = token;
    let socket: WebSocketLike;
    try {
      socket = new this.WebSocketImpl(withToken(this.url, token));
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
    // From here on, silence of 2.5 heartbeats means a dead connection, whether it is still connecting
    // (a handshake that never completes) or open.
    this.lastFrameAt = Date.now();
    this.startWatchdog();
    socket.onopen = () => generation === this.generation && this.opened(generation);
    socket.onmessage = (event) => generation === this.generation && this.frame(String(event.data));
    socket.onclose = (event) => generation === this.generation && this.closed(generation, event.code, event.reason);
    socket.onerror = () => undefined; // the close follows, with its code
  }

  private async token(): Promise<string | null> {
    if (this.options.getToken) return (await this.options.getToken()) ?? null;
    return this.options.token ?? null;
  }

  private opened(generation: number): void {
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
          send: (token) => this.request({ type: "access_token", token }),
          marginMs: this.options.tokenRefreshMarginMs ?? 30_000,
          report: (error) => this.report(error),
        },
        this.currentToken,
      );
    }
    this.setStatus("open", {});
    for (const subscription of this.subscriptions.values()) subscription.opened();
  }

  /** The socket closed (or was given up on): fail what awaited it, and come back after a backoff delay. */
  private closed(generation: number, code: number, reason: string): void {
    if (generation !== this.generation) return;
    this.generation++;
    this.socket = null;
    this.stopTimers();
    const error = new RealtimeError(`the connection closed (${code}${reason ? ` ${reason}` : ""})`, CONNECTION_CLOSED);
    this.requests.failAll(error);
    for (const subscription of this.subscriptions.values()) subscription.closed();
    if (!this.wanted) return;
    // After an expiry the token source is asked for a new token at once; otherwise back off, on top of
    // what a server that refused the handshake for load asked for (Retry-After).
    const retryAfter = this.refusedRetryAfterMs ?? 0;
    const delay = this.tokenExpired
      ? 0
      : retryAfter + backoffDelay(this.attempt++, this.options.backoff, this.options.random);
    this.tokenExpired = false;
    this.refusedRetryAfterMs = null;
    this.setStatus("closed", { code, reason, retryInMs: delay });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.wanted) void this.open();
    }, delay);
  }

  /** Close the current socket without waiting for its close handshake (a dead peer never answers). */
  private drop(code: number, reason: string): void {
    const socket = this.socket;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      socket.onerror = () => undefined;
      try {
        socket.close(code >= 4000 || code === 1000 ? code : 1000, reason);
      } catch {
        // already closed
      }
    }
    this.closed(this.generation, code, reason);
  }

  private stopTimers(): void {
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.refresh?.stop();
    this.refresh = null;
    this.watchdog = null;
    this.outbox?.clear();
    this.outbox = null;
  }

  private startWatchdog(): void {
    const interval = this.options.heartbeatIntervalMs ?? 30_000;
    const limit = interval * (this.options.heartbeatTolerance ?? 2.5);
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastFrameAt > limit) this.drop(4000, "no heartbeat");
    }, Math.max(10, interval / 4));
  }

  // Frames

  private frame(text: string): void {
    this.lastFrameAt = Date.now();
    let frame: ServerFrame;
    try {
      frame = JSON.parse(text) as ServerFrame;
    } catch {
      return this.report(new Error("the server sent a frame that is not JSON"));
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "ack" || frame.type === "heartbeat") this.attempt = 0; // the server answers: stable
    if (this.requests.settle(frame)) return;
    if (frame.type === "heartbeat" || frame.type === "ack") return;
    if (typeof frame.channel === "string") {
      const subscription = this.subscriptions.get(subscriptionKey(frame.channel, frame.subscription));
      if (subscription) return subscription.handle(frame, text);
      if (frame.type !== "error") return;
      // An error naming the channel but no subscription id: it concerns them all (a replay_gap resets
      // each, which at worst reloads one view too many).
      const all = [...this.subscriptions.values()].filter((s) => s.channel === frame.channel);
      if (frame.subscription === undefined && all.length) for (const s of all) s.handle(frame, text);
      else this.report(RealtimeError.from(frame));
      return;
    }
    if (frame.type === "error") {
      if (frame.code === "token_expired") this.tokenExpired = true;
      this.report(RealtimeError.from(frame));
    }
  }

  // Transport (for subscriptions)

  isOpen(): boolean {
    return this.status === "open" && this.outbox !== null;
  }

  request(message: Record<string, unknown>, answer?: Answer): Promise<ServerFrame> {
    const outbox = this.outbox;
    if (!outbox || this.status !== "open") {
      const error = new RealtimeError("not connected", CONNECTION_CLOSED);
      answer?.error(error);
      return Promise.reject(error);
    }
    return this.requests.send((frame) => outbox.send(frame), message, answer);
  }

  retryDelay(attempt: number): number {
    return backoffDelay(attempt, this.options.backoff, this.options.random);
  }

  report(error: unknown): void {
    for (const handler of this.listeners.error) {
      try {
        handler(error);
      } catch {
        // an error handler's own failure has nowhere to go
      }
    }
  }

  // Channels (internal)

  /** @internal */
  _attach(channel: Channel<never>): Subscription {
    const key = subscriptionKey(channel.name, channel.options.subscription);
    let subscription = this.subscriptions.get(key);
    if (subscription && !sameOptions(subscription.options, channel.options)) {
      throw new Error(
        `${channel.name} is already subscribed with other options: give each a distinct 'subscription' id`,
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
  _detach(channel: Channel<never>, subscription: Subscription): Promise<void> {
    subscription.views.delete(channel);
    if (subscription.views.size) return Promise.resolve();
    const key = subscriptionKey(subscription.channel, subscription.options.subscription);
    if (this.subscriptions.get(key) === subscription) this.subscriptions.delete(key);
    return subscription.end();
  }

  /** @internal */
  _report(error: unknown): void {
    this.report(error);
  }

  private setStatus(status: ClientStatus, detail: StatusDetail): void {
    this.status = status;
    for (const handler of this.listeners.status) {
      try {
        handler(status, detail);
      } catch (error) {
        this.report(error);
      }
    }
  }
}

function withToken(url: string, token: string | null): string {
  if (!token) return url;
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
}

function sameOptions(a: SubscribeOptions, b: SubscribeOptions): boolean {
  const pick = (o: SubscribeOptions) => JSON.stringify([o.filter, o.events, o.columns, o.self]);
  return pick(a) === pick(b);
}

