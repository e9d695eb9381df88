/** The frames of the fluxbase-realtime protocol, as the client sees them (see the server's docs/protocol.md). */

import type { ChangeId } from "./ids.js";
import { frameRetryAfter } from "./retryafter.js";

export type Ref = string;
export type ChangeType = "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE";

/** A row change on a table channel, as delivered to the application. */
export interface Change<Row = Record<string, unknown>> {
  /** Position in the server's change log (digits; may exceed 2^53). */
  id: ChangeId;
  channel: string;
  /** The client-chosen subscription id this change was sent for, if the subscription had one. */
  subscription?: string;
  type: ChangeType;
  schema: string;
  table: string;
  /** The new row (INSERT, UPDATE). */
  record?: Row;
  /** The old row (UPDATE, DELETE); only the primary key where row-level security hides the rest. */
  old_record?: Partial<Row>;
  /** TRUNCATE of one partition of this partitioned table: only the rows stored in it are gone. The
   * channel's status then goes to `reset` (reload), since rows do not say which partition held them. */
  partition?: { schema: string; table: string };
}

/** A message on a broadcast channel: from a client (no id) or from the database/HTTP (with an id). */
export interface BroadcastMessage<Payload = unknown> {
  channel: string;
  event: string;
  payload: Payload;
  id?: ChangeId;
}

export interface PresenceEntry<State = unknown> {
  presence_id: string;
  state: State;
}

/** key (the token's `sub`, or `anon:<id>`) → one entry per connection that tracks it. */
export type PresenceState<State = unknown> = Record<string, PresenceEntry<State>[]>;

/** A frame from the server, parsed; `id` is the exact id when it carries one. */
export interface ServerFrame {
  type: string;
  channel?: string;
  subscription?: string;
  ref?: string | number;
  code?: string;
  error?: string;
  event?: string;
  payload?: unknown;
  presences?: PresenceState;
  joins?: PresenceState;
  updates?: PresenceState;
  leaves?: PresenceState;
  [key: string]: unknown;
}

/** A refusal from the server (`{"type":"error",...}`), as an Error. */
export class RealtimeError extends Error {
  readonly code: string | undefined;
  readonly channel: string | undefined;
  /** A refusal for load (`subscribe_failed` with `retry_after`): how long the server asked the client to
   * wait before trying again, in ms. */
  readonly retryAfterMs: number | undefined;

  constructor(message: string, code?: string, channel?: string, retryAfterMs?: number) {
    super(message);
    this.name = "RealtimeError";
    this.code = code;
    this.channel = channel;
    this.retryAfterMs = retryAfterMs;
  }

  static from(frame: ServerFrame): RealtimeError {
    const retryAfterMs = frameRetryAfter(frame.retry_after) ?? undefined;
    return new RealtimeError(String(frame.error ?? "error"), frame.code, frame.channel, retryAfterMs);
  }
}
