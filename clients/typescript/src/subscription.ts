/** One subscription on the wire: a (channel, subscription id) the server knows, shared by every Channel
 * object of the application that names it. It owns the resume position: the id of the last change
 * delivered to the application, sent back as `since` after every reconnect. */

import { frameId, isAfter, type ChangeId } from "./ids.js";
import {
  RealtimeError,
  type BroadcastMessage,
  type Change,
  type PresenceState,
  type ServerFrame,
} from "./messages.js";
import { Presence, type PresenceChange } from "./presence.js";

export type ChannelStatus = "subscribing" | "subscribed" | "resumed" | "reset" | "closed" | "error";

/** What the server is asked for at subscribe (see the server's docs/protocol.md and the filters issue). */
export interface SubscribeOptions {
  /** A row filter in the PostgREST syntax, e.g. `status=eq.paid,amount=gt.100`. */
  filter?: string;
  /** Which changes to receive (default all). */
  events?: string[];
  /** Columns to send in `record`/`old_record` (the primary key is always sent). */
  columns?: string[];
  /** A client-chosen id, for several subscriptions to one channel on one connection. */
  subscription?: string;
  /** Broadcast channels: receive this connection's own broadcasts too. */
  self?: boolean;
  /** Start after this change id (default: from now on). */
  since?: ChangeId;
}

/** What a subscription needs of the connection. */
export interface Transport {
  isOpen(): boolean;
  /** Send with a fresh `ref`; resolves on the `ack`, rejects on the `error` (or the socket's close:
   * code `connection_closed`). `answer`, when given, is called synchronously as the reply is read. */
  request(message: Record<string, unknown>, answer?: Answer): Promise<ServerFrame>;
  retryDelay(attempt: number): number;
  report(error: unknown): void;
}

/** What a subscription tells the Channel objects that share it. */
export interface SubscriptionView {
  _deliverChange(change: Change<unknown>): void;
  _deliverBroadcast(message: BroadcastMessage): void;
  _deliverPresence(changes: PresenceChange[], state: PresenceState): void;
  _status(status: ChannelStatus, detail?: unknown): void;
}

export type Answer = { ack(frame: ServerFrame): void; error(error: unknown): void };
type Waiter = { resolve: () => void; reject: (error: unknown) => void };

export const CONNECTION_CLOSED = "connection_closed";

export function subscriptionKey(channel: string, subscription?: string): string {
  return `${channel}\u0000${subscription ?? ""}`;
}

export class Subscription {
  readonly views = new Set<SubscriptionView>();
  readonly presence = new Presence();
  lastId: ChangeId | null;
  private state: "idle" | "subscribing" | "subscribed" | "ended" = "idle";
  private everAcked = false;
  private waiters: Waiter[] = [];
  private tracked: { state: unknown } | null = null;
  private trackWaiters: Waiter[] = [];
  private retries = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly transport: Transport,
    readonly channel: string,
    readonly options: SubscribeOptions,
  ) {
    this.lastId = options.since ?? null;
  }

  get isTable(): boolean {
    return this.channel.startsWith("table:");
  }

  get subscribed(): boolean {
    return this.state === "subscribed";
  }

  /** Resolves once the server has acked the subscription (now, if it has). */
  ready(): Promise<void> {
    if (this.state === "subscribed") return Promise.resolve();
    if (this.state === "ended") return Promise.reject(new RealtimeError("the channel is unsubscribed"));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** The socket is open (again): subscribe, from the last delivered id when there is one. */
  opened(): void {
    if (this.state === "ended") return;
    this.subscribe();
  }

  /** The socket is gone: everything is re-sent on the next one. */
  closed(): void {
    if (this.state !== "ended") this.state = "idle";
    this.clearRetry();
  }

  subscribe(): void {
    if (this.state === "ended" || !this.transport.isOpen()) return;
    this.clearRetry();
    this.state = "subscribing";
    const resuming = this.everAcked;
    const since = this.lastId;
    const message: Record<string, unknown> = { type: "subscribe", channel: this.channel };
    for (const key of ["filter", "events", "columns", "subscription", "self"] as const) {
      if (this.options[key] !== undefined) message[key] = this.options[key];
    }
    if (since !== null) message.since = since;
    // Answered synchronously, as the frame is read: the frames that follow the ack (a replay, sent with
    // it) may be read in the same tick, before any promise callback would run.
    this.transport.request(message, {
      ack: (frame: ServerFrame) => {
        if (this.state !== "subscribing") return;
        // A subscribe from "now" is told where it starts: cut off before any change arrives, the channel
        // resumes from there instead of not knowing what it missed.
        if (this.lastId === null && typeof frame.since === "string" && /^\d+$/.test(frame.since)) {
          this.lastId = frame.since;
        }
        this.state = "subscribed";
        this.everAcked = true;
        this.retries = 0;
        for (const waiter of this.waiters.splice(0)) waiter.resolve();
        if (!resuming) this.emit("subscribed");
        else if (since !== null) this.emit("resumed");
        // Resubscribed from "now" with no position to resume from (nothing was delivered yet): changes
        // committed while disconnected are unknown, so the application must reload.
        else this.emit(this.isTable ? "reset" : "resumed", { reason: "position_unknown" });
        if (this.tracked) this.sendTrack();
      },
      error: (error: unknown) => {
        if (this.state !== "subscribing") return;
        this.state = "idle";
        if (error instanceof RealtimeError && error.code === CONNECTION_CLOSED) return; // resent on open
        this.emit("error", error);
        // A refusal for load says when to come back (retry_after): not a refusal for good, even at the
        // first subscribe.
        const retryAfterMs = error instanceof RealtimeError ? error.retryAfterMs : undefined;
        if (!this.everAcked && retryAfterMs === undefined) {
          // Refused at the first subscribe: the application hears it from subscribe()'s promise.
          for (const waiter of this.waiters.splice(0)) waiter.reject(error);
          return;
        }
        this.scheduleRetry(retryAfterMs);
      },
    }).catch(() => undefined);
  }

  /** The last view left: stop, and tell the server when it is listening. */
  end(): Promise<void> {
    const wasLive = this.state === "subscribed" || this.state === "subscribing";
    this.state = "ended";
    this.clearRetry();
    const error = new RealtimeError("the channel was unsubscribed");
    for (const waiter of [...this.waiters.splice(0), ...this.trackWaiters.splice(0)]) waiter.reject(error);
    if (!wasLive || !this.transport.isOpen()) return Promise.resolve();
    const message: Record<string, unknown> = { type: "unsubscribe", channel: this.channel };
    if (this.options.subscription !== undefined) message.subscription = this.options.subscription;
    return this.transport.request(message).then(
      () => undefined,
      () => undefined, // not subscribed any more, or the socket closed: either way it is over
    );
  }

  /** A frame for this subscription (routed by channel and subscription id). */
  handle(frame: ServerFrame, text: string): void {
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

  private broadcast(frame: ServerFrame, text: string): void {
    // Anything before the ack belongs to an earlier subscription of this channel: the ack comes first.
    if (this.state !== "subscribed") return;
    const id = frameId(frame.id, text);
    if (id !== null && !isAfter(id, this.lastId)) return; // delivered already (a replay overlapping)
    let truncatedPartition: unknown = undefined;
    try {
      if (this.isTable) {
        const payload = (frame.payload ?? {}) as Omit<Change, "id" | "channel">;
        const change: Change<unknown> = { ...payload, id: id ?? "", channel: this.channel };
        if (frame.subscription !== undefined) change.subscription = frame.subscription;
        if (change.type === "TRUNCATE" && change.partition) truncatedPartition = change.partition;
        for (const view of this.views) view._deliverChange(change);
      } else {
        const message: BroadcastMessage = {
          channel: this.channel,
          event: String(frame.event ?? ""),
          payload: frame.payload,
        };
        if (id !== null) message.id = id;
        for (const view of this.views) view._deliverBroadcast(message);
      }
    } finally {
      if (id !== null) this.lastId = id;
    }
    // One partition's rows are gone, and rows do not say which partition held them: the application
    // reloads (after the TRUNCATE, before the changes that follow it). The position stays.
    if (truncatedPartition !== undefined) {
      this.emit("reset", { reason: "partition_truncated", partition: truncatedPartition });
    }
  }

  private error(frame: ServerFrame): void {
    const error = RealtimeError.from(frame);
    switch (frame.code) {
      case "replay_gap":
        // What follows is delivered from where the log starts (or from its head): accept it whatever
        // its id, and have the application reload what it missed.
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
  async send(event: string, payload: unknown): Promise<void> {
    await this.ready();
    await this.transport.request({ type: "broadcast", channel: this.channel, event, payload });
  }

  track(state: unknown): Promise<void> {
    this.tracked = { state };
    const done = new Promise<void>((resolve, reject) => this.trackWaiters.push({ resolve, reject }));
    if (this.state === "subscribed") this.sendTrack();
    return done;
  }

  untrack(): Promise<void> {
    this.tracked = null;
    for (const waiter of this.trackWaiters.splice(0)) waiter.resolve();
    if (this.state !== "subscribed") return Promise.resolve();
    return this.transport.request({ type: "untrack", channel: this.channel }).then(() => undefined);
  }

  private sendTrack(): void {
    const tracked = this.tracked;
    if (!tracked) return;
    this.transport.request({ type: "track", channel: this.channel, state: tracked.state }).then(
      () => {
        if (this.tracked !== tracked) return;
        for (const waiter of this.trackWaiters.splice(0)) waiter.resolve();
      },
      (error: unknown) => {
        if (error instanceof RealtimeError && error.code === CONNECTION_CLOSED) return; // re-tracked on open
        if (this.tracked === tracked) this.tracked = null;
        for (const waiter of this.trackWaiters.splice(0)) waiter.reject(error);
      },
    );
  }

  /** Subscribe again after a backoff, on top of the `retryAfterMs` a refusal for load asked for. */
  private scheduleRetry(retryAfterMs = 0): void {
    if (this.retryTimer !== null || this.state === "ended") return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.subscribe();
    }, retryAfterMs + this.transport.retryDelay(this.retries++));
  }

  private clearRetry(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private emitPresence(changes: PresenceChange[]): void {
    const state = this.presence.snapshot();
    for (const view of this.views) view._deliverPresence(changes, state);
  }

  private emit(status: ChannelStatus, detail?: unknown): void {
    for (const view of this.views) {
      try {
        view._status(status, detail);
      } catch (error) {
        this.transport.report(error);
      }
    }
  }
}
