/** Which server the hooks talk to, and the clients they share: one RealtimeClient (one WebSocket) per
 * URL and token, opened by the first hook that needs it and closed when the last one unmounts. */

import { RealtimeClient, type RealtimeClientOptions } from "@fluxbase-realtime/client";
import { createContext, createElement, useContext, type ReactNode } from "react";

export interface RealtimeConfig {
  /** ws(s)://host/realtime; default the page's own host, `/realtime`. */
  url?: string;
  /** Options for the clients the hooks create (WebSocket, backoff, heartbeatIntervalMs, getToken...). */
  options?: RealtimeClientOptions;
  /** A client of the application's own; used by every hook that passes no token of its own. */
  client?: RealtimeClient;
}

const RealtimeContext = createContext<RealtimeConfig>({});

export function RealtimeProvider(props: RealtimeConfig & { children?: ReactNode }): ReactNode {
  const { children, ...config } = props;
  return createElement(RealtimeContext.Provider, { value: config }, children);
}

export function useRealtimeConfig(): RealtimeConfig {
  return useContext(RealtimeContext);
}

export interface ClientLease {
  client: RealtimeClient;
  release(): void;
}

const shared = new Map<string, { client: RealtimeClient; users: number }>();

/** A client for this configuration and token, shared; release() when done. */
export function acquireClient(config: RealtimeConfig, token: string | null | undefined): ClientLease {
  if (config.client && token == null) return { client: config.client, release: () => undefined };
  const url = config.url ?? defaultUrl();
  const key = `${url}\u0000${token ?? ""}`;
  let entry = shared.get(key);
  if (!entry) {
    const options: RealtimeClientOptions = { ...config.options };
    if (token != null) {
      options.token = token;
      delete options.getToken;
    }
    entry = { client: new RealtimeClient(url, options), users: 0 };
    shared.set(key, entry);
  }
  entry.users++;
  const held = entry;
  let released = false;
  return {
    client: held.client,
    release() {
      if (released) return;
      released = true;
      held.users--;
      // Not at once: StrictMode unmounts and mounts again in the same tick, and a hook that moves
      // between components should not cost a reconnect.
      setTimeout(() => {
        if (held.users === 0 && shared.get(key) === held) {
          shared.delete(key);
          held.client.disconnect();
        }
      }, 0);
    },
  };
}

function defaultUrl(): string {
  const location = (globalThis as { location?: { protocol: string; host: string } }).location;
  if (!location) throw new Error("no realtime URL: wrap the app in <RealtimeProvider url=...>");
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/realtime`;
}
