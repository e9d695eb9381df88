/** useBroadcast: receive one event of a broadcast channel (or `*`), and send on it. */

import type { BroadcastMessage, RealtimeClient } from "@fluxbase-realtime/client";
import { useCallback, useEffect, useRef, useState } from "react";
import { acquireClient, useRealtimeConfig } from "./context.js";
import { useLatest } from "./useLatest.js";

export interface UseBroadcastOptions {
  token?: string | null;
  /** Receive this connection's own broadcasts too. */
  self?: boolean;
}

export interface UseBroadcastResult {
  /** Broadcast `payload` as `event` (default the hook's event); resolves once the server accepted it. */
  send(payload: unknown, event?: string): Promise<void>;
  connected: boolean;
}

export function useBroadcast<Payload = unknown>(
  channel: string,
  event: string,
  handler?: (message: BroadcastMessage<Payload>) => void,
  options: UseBroadcastOptions = {},
): UseBroadcastResult {
  const config = useRealtimeConfig();
  const latest = useLatest(handler);
  const [connected, setConnected] = useState(false);
  const current = useRef<{ send(event: string, payload: unknown): Promise<void> } | null>(null);
  const { token, self } = options;

  useEffect(() => {
    const lease = acquireClient(config, token);
    const handle = channelOf(lease.client, channel, self)
      .on("broadcast", event, (message: BroadcastMessage) => latest.current?.(message as BroadcastMessage<Payload>))
      .on("status", (status) => setConnected(status === "subscribed" || status === "resumed" || status === "reset"));
    current.current = handle;
    const offStatus = lease.client.on("status", (status) => status !== "open" && setConnected(false));
    handle.subscribe().then(
      () => setConnected(true),
      () => setConnected(false),
    );
    return () => {
      current.current = null;
      offStatus();
      void handle.unsubscribe();
      lease.release();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [channel, event, token ?? null, self, config.client, config.url]);

  const send = useCallback(
    (payload: unknown, name?: string) => {
      const handle = current.current;
      if (!handle) return Promise.reject(new Error("useBroadcast: not mounted"));
      return handle.send(name ?? event, payload);
    },
    [event],
  );
  return { send, connected };
}

function channelOf(client: RealtimeClient, channel: string, self: boolean | undefined) {
  return client.channel(channel, self === undefined ? {} : { self });
}
