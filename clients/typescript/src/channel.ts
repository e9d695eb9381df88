/** What the application holds: a channel with its handlers. Several Channel objects may share one
 * subscription on the wire (same channel and subscription id); each has its own handlers and life. */

import type { ChangeId } from "./ids.js";
import type { BroadcastMessage, Change, ChangeType, PresenceEntry, PresenceState } from "./messages.js";
import type { PresenceChange, PresenceEvent } from "./presence.js";
import type { ChannelStatus, SubscribeOptions, Subscription, SubscriptionView } from "./subscription.js";

export type ChangeEvent = ChangeType | "*";
export type ChangeHandler<Row> = (change: Change<Row>) => void;
export type BroadcastHandler<Payload = unknown> = (message: BroadcastMessage<Payload>) => void;
export type PresenceSyncHandler = (state: PresenceState) => void;
export type PresenceChangeHandler = (key: string, entries: PresenceEntry[], state: PresenceState) => void;
export type StatusHandler = (status: ChannelStatus, detail?: unknown) => void;

/** How a Channel reaches its client (internal). */
export interface ChannelHost {
  _attach(channel: Channel<never>): Subscription;
  _detach(channel: Channel<never>, subscription: Subscription): Promise<void>;
  _report(error: unknown): void;
}

export class Channel<Row = Record<string, unknown>> implements SubscriptionView {
  private readonly changeHandlers = new Map<ChangeEvent, Set<ChangeHandler<Row>>>();
  private readonly broadcastHandlers = new Map<string, Set<BroadcastHandler>>();
  private readonly presenceHandlers = new Map<"sync" | PresenceEvent, Set<Function>>();
  private readonly statusHandlers = new Set<StatusHandler>();
  private wire: Subscription | null = null;

  constructor(
    private readonly host: ChannelHost,
    readonly name: string,
    readonly options: SubscribeOptions = {},
  ) {}

  /** Table changes of one type, or all (`*`). */
  on(event: ChangeEvent, handler: ChangeHandler<Row>): this;
  /** Broadcasts of one event name, or all (`*`), on a `broadcast:` channel. */
  on<Payload = unknown>(event: "broadcast", name: string, handler: BroadcastHandler<Payload>): this;
  /** The full presence state, after the first state and after every change. */
  on(event: "presence", kind: "sync", handler: PresenceSyncHandler): this;
  /** Presences joining, updating their state, or leaving. */
  on(event: "presence", kind: PresenceEvent, handler: PresenceChangeHandler): this;
  /** subscribed, resumed (after a reconnect, nothing missed), reset (reload: changes were missed, or a
   * TRUNCATE emptied one partition of the table: detail `{ reason: "partition_truncated", partition }`),
   * error (a refusal or a failure the client retries), closed (the server ended the subscription). */
  on(event: "status", handler: StatusHandler): this;
  on(event: string, a: unknown, b?: unknown): this {
    if (event === "broadcast") add(this.broadcastHandlers, String(a), b as BroadcastHandler);
    else if (event === "presence") add(this.presenceHandlers, a as "sync" | PresenceEvent, b as Function);
    else if (event === "status") this.statusHandlers.add(a as StatusHandler);
    else add(this.changeHandlers, event as ChangeEvent, a as ChangeHandler<Row>);
    return this;
  }

  /** Remove a handler added with on() (same arguments). */
  off(event: string, a: unknown, b?: unknown): this {
    if (event === "broadcast") this.broadcastHandlers.get(String(a))?.delete(b as BroadcastHandler);
    else if (event === "presence") this.presenceHandlers.get(a as "sync")?.delete(b as Function);
    else if (event === "status") this.statusHandlers.delete(a as StatusHandler);
    else this.changeHandlers.get(event as ChangeEvent)?.delete(a as ChangeHandler<Row>);
    return this;
  }

  /** Subscribe; resolves on the server's ack, rejects on its error. The client connects if it is not. */
  subscribe(): Promise<this> {
    if (!this.wire) this.wire = this.host._attach(this as unknown as Channel<never>);
    return this.wire.ready().then(() => this);
  }

  /** Stop receiving; the last Channel of a subscription unsubscribes it on the server (and untracks). */
  unsubscribe(): Promise<void> {
    const wire = this.wire;
    this.wire = null;
    if (!wire) return Promise.resolve();
    return this.host._detach(this as unknown as Channel<never>, wire);
  }

  /** Broadcast on a `broadcast:` channel; resolves once the server accepted it for delivery. */
  send(event: string, payload: unknown): Promise<void> {
    return this.requireWire().send(event, payload);
  }

  /** Join this channel's presence with `state` (or update it); re-tracked after every reconnect. */
  track(state: unknown): Promise<void> {
    return this.requireWire().track(state);
  }

  untrack(): Promise<void> {
    return this.requireWire().untrack();
  }

  /** The channel's presences as last known. */
  presence(): PresenceState {
    return this.wire ? this.wire.presence.snapshot() : {};
  }

  /** The id of the last change delivered to the application (where a resume starts), or null. */
  get lastId(): ChangeId | null {
    return this.wire?.lastId ?? null;
  }

  get subscribed(): boolean {
    return this.wire?.subscribed ?? false;
  }

  private requireWire(): Subscription {
    if (!this.wire) throw new Error(`subscribe() to ${this.name} first`);
    return this.wire;
  }

  /** @internal */
  _deliverChange(change: Change<unknown>): void {
    const typed = change as Change<Row>;
    this.call(this.changeHandlers.get(change.type), typed);
    this.call(this.changeHandlers.get("*"), typed);
  }

  /** @internal */
  _deliverBroadcast(message: BroadcastMessage): void {
    this.call(this.broadcastHandlers.get(message.event), message);
    this.call(this.broadcastHandlers.get("*"), message);
  }

  /** @internal */
  _deliverPresence(changes: PresenceChange[], state: PresenceState): void {
    for (const change of changes) {
      for (const handler of this.presenceHandlers.get(change.event) ?? []) {
        this.guard(() => handler(change.key, change.entries, state));
      }
    }
    for (const handler of this.presenceHandlers.get("sync") ?? []) this.guard(() => handler(state));
  }

  /** @internal */
  _status(status: ChannelStatus, detail?: unknown): void {
    for (const handler of this.statusHandlers) this.guard(() => handler(status, detail));
  }

  private call<T>(handlers: Set<(value: T) => void> | undefined, value: T): void {
    if (!handlers) return;
    for (const handler of handlers) this.guard(() => handler(value));
  }

  private guard(run: () => void): void {
    try {
      run();
    } catch (error) {
      // One handler's bug must not stop the others, nor the position from advancing.
      this.host._report(error);
    }
  }
}

function add<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  set.add(value);
}
