/** usePresence: who is on a broadcast channel; with a state, this client is tracked there (re-tracked
 * after every reconnect, untracked on unmount). */

import type { PresenceState } from "@fluxbase-realtime/client";
import { useEffect, useRef, useState } from "react";
import { acquireClient, useRealtimeConfig } from "./context.js";

export interface UsePresenceOptions {
  token?: string | null;
}

export function usePresence<State = unknown>(
  channel: string,
  state?: State | null,
  options: UsePresenceOptions = {},
): PresenceState<State> {
  const config = useRealtimeConfig();
  const [presences, setPresences] = useState<PresenceState<State>>({});
  const handleRef = useRef<ReturnType<ReturnType<typeof acquireClient>["client"]["channel"]> | null>(null);
  const stateJson = state == null ? null : JSON.stringify(state);
  const { token } = options;

  useEffect(() => {
    const lease = acquireClient(config, token);
    const handle = lease.client
      .channel(channel)
      .on("presence", "sync", (all) => setPresences(all as PresenceState<State>));
    handleRef.current = handle;
    handle.subscribe().catch(() => undefined);
    return () => {
      handleRef.current = null;
      void handle.untrack().catch(() => undefined);
      void handle.unsubscribe();
      lease.release();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [channel, token ?? null, config.client, config.url]);

  useEffect(() => {
    const handle = handleRef.current;
    if (!handle) return;
    if (stateJson === null) void handle.untrack().catch(() => undefined);
    else void handle.track(JSON.parse(stateJson)).catch(() => undefined);
  }, [stateJson, channel, token ?? null]);

  return presences;
}
