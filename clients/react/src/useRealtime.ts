/** useRealtime: a table's rows, live. Subscribe, then load, then apply each change by primary key, so
 * the list stays equal to the SELECT that load() makes; reconnects resume from the last change, and a
 * `reset` (changes were missed) loads again. */

import type { Change, ChangeType, RealtimeClientOptions } from "@fluxbase-realtime/client";
import { useEffect, useState } from "react";
import { acquireClient, useRealtimeConfig } from "./context.js";
import { keyFunction, Rows, type KeyOf } from "./rows.js";
import { useLatest } from "./useLatest.js";

export interface UseRealtimeOptions<Row> {
  /** A JWT for this hook's connection (null: the provider's client, or anonymous). */
  token?: string | null;
  /** Server-side row filter, PostgREST syntax (`status=eq.paid`). */
  filter?: string;
  events?: ChangeType[];
  columns?: string[];
  /** A client-chosen subscription id (several views of one table on one connection). */
  subscription?: string;
  /** The rows as they are now (the same filter as `filter`): called after the subscribe is acked and
   * after every reset. Without it the list starts empty and holds what changes brought. */
  load?: () => Promise<readonly Row[]> | readonly Row[];
  /** The row's key; default the primaryKey column(s), else `id`. */
  key?: KeyOf<Row>;
  primaryKey?: string | string[];
  /** Options of the client this hook creates (when it does). */
  options?: RealtimeClientOptions;
}

export interface UseRealtimeResult<Row> {
  data: Row[];
  /** The socket is open and the channel subscribed. */
  connected: boolean;
  /** A load() is running (the first, or after a reset). */
  loading: boolean;
  /** The last error: a refused subscribe, or a failed load() (retried). */
  error: unknown;
}

const LOAD_RETRY_CAP_MS = 30_000;

export function useRealtime<Row = Record<string, unknown>>(
  channel: string,
  tokenOrOptions?: string | null | UseRealtimeOptions<Row>,
): UseRealtimeResult<Row> {
  const options: UseRealtimeOptions<Row> =
    tokenOrOptions !== null && typeof tokenOrOptions === "object" ? tokenOrOptions : { token: tokenOrOptions };
  const config = useRealtimeConfig();
  const latest = useLatest(options);
  const [state, setState] = useState<UseRealtimeResult<Row>>({
    data: [],
    connected: false,
    loading: options.load !== undefined,
    error: undefined,
  });
  const { token, filter, events, columns, subscription, primaryKey } = options;
  const identity = JSON.stringify([channel, token ?? null, filter, events, columns, subscription, primaryKey]);

  useEffect(() => {
    const lease = acquireClient(
      options.options ? { ...config, options: { ...config.options, ...options.options } } : config,
      token,
    );
    const client = lease.client;
    const byPrimaryKey = keyFunction<Row>(undefined, primaryKey);
    const rows = new Rows<Row>((row) => (latest.current.key ?? byPrimaryKey)(row));
    let active = true;
    let loads = 0;
    let retry: ReturnType<typeof setTimeout> | null = null;
    // Changes that arrive while a load() runs wait for it, and are applied after its rows.
    let pending: Change<Row>[] | null = latest.current.load ? [] : null;
    const update = (patch: Partial<UseRealtimeResult<Row>>) => active && setState((s) => ({ ...s, ...patch }));

    const load = async (attempt = 0): Promise<void> => {
      const loader = latest.current.load;
      if (!loader) return;
      const mine = ++loads;
      pending ??= [];
      update({ loading: true });
      try {
        const loaded = await loader();
        if (!active || mine !== loads) return;
        rows.replace(loaded);
        for (const change of pending) rows.apply(change);
        pending = null;
        update({ data: rows.list(), loading: false, error: undefined });
      } catch (error) {
        if (!active || mine !== loads) return;
        update({ error });
        retry = setTimeout(() => void load(attempt + 1), Math.min(LOAD_RETRY_CAP_MS, 500 * 2 ** attempt));
      }
    };

    const subscriptionOptions = Object.fromEntries(
      Object.entries({ filter, events, columns, subscription }).filter(([, v]) => v !== undefined),
    );
    const handle = client
      .channel<Row>(channel, subscriptionOptions)
      .on("*", (change) => {
        if (pending) pending.push(change);
        else if (rows.apply(change)) update({ data: rows.list() });
      })
      .on("status", (status) => {
        if (status === "subscribed" || status === "resumed") update({ connected: true });
        if (status === "reset") {
          update({ connected: true });
          if (latest.current.load) {
            pending = []; // from this change on, wait for the new load
            void load();
          }
        }
        if (status === "closed") update({ connected: false });
      });
    const offStatus = client.on("status", (status) => {
      if (status !== "open") update({ connected: false });
    });
    handle.subscribe().then(
      () => {
        update({ connected: true });
        void load();
      },
      (error: unknown) => update({ error, loading: false }),
    );
    return () => {
      active = false;
      if (retry !== null) clearTimeout(retry);
      offStatus();
      void handle.unsubscribe();
      lease.release();
    };
    // Callbacks (load, key) are read through `latest`: an inline function does not resubscribe.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [identity, config.client, config.url]);

  return state;
}
