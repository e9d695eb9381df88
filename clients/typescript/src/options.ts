/** What a RealtimeClient can be told, and what it tells. */

import type { BackoffOptions } from "./backoff.js";

/** The part of the WebSocket API the client uses: the browser's, Node 22's, or the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type TokenSource = () => string | null | undefined | Promise<string | null | undefined>;

export interface RealtimeClientOptions {
  /** A JWT for every connection (or null: anonymous). */
  token?: string | null;
  /** Called for every connection and refresh: a token (fresh when the last one nears expiry), or null. */
  getToken?: TokenSource;
  /** A WebSocket implementation; default the global one (Node 20 has none: pass `ws`'s). */
  WebSocket?: WebSocketConstructor;
  /** The server's REALTIME_HEARTBEAT_INTERVAL in ms (default 30,000). */
  heartbeatIntervalMs?: number;
  /** Reconnect when no frame came for this many heartbeat intervals (default 2.5). */
  heartbeatTolerance?: number;
  /** Reconnect delays (full jitter): default base 500 ms, cap 20 s. */
  backoff?: BackoffOptions;
  /** Refresh the token this long before its `exp` (default 30 s; at most half its remaining life). */
  tokenRefreshMarginMs?: number;
  /** Client messages per second, under the server's REALTIME_MAX_MESSAGES_PER_SECOND (default 40). */
  messagesPerSecond?: number;
  /** Where the browser's `online` event comes from (default globalThis when it has addEventListener). */
  onlineEvents?: OnlineEvents | null;
  /** [0, 1): the backoff's jitter (tests). */
  random?: () => number;
}

export interface OnlineEvents {
  addEventListener(type: "online", listener: () => void): void;
  removeEventListener(type: "online", listener: () => void): void;
}

export type ClientStatus = "idle" | "connecting" | "open" | "closed";
export interface StatusDetail {
  code?: number;
  reason?: string;
  /** The reconnect delay chosen after a close, in ms. */
  retryInMs?: number;
}
