export { RealtimeClient } from "./client.js";
export type {
  ClientStatus,
  OnlineEvents,
  RealtimeClientOptions,
  StatusDetail,
  TokenSource,
  WebSocketConstructor,
  WebSocketLike,
} from "./options.js";
export { Channel } from "./channel.js";
export type {
  BroadcastHandler,
  ChangeEvent,
  ChangeHandler,
  PresenceChangeHandler,
  PresenceSyncHandler,
  StatusHandler,
} from "./channel.js";
export type { ChannelStatus, SubscribeOptions } from "./subscription.js";
export { RealtimeError } from "./messages.js";
export type { BroadcastMessage, Change, ChangeType, PresenceEntry, PresenceState } from "./messages.js";
export { backoffCeiling, backoffDelay, DEFAULT_BACKOFF } from "./backoff.js";
export { frameRetryAfter, MAX_RETRY_AFTER_MS, parseRetryAfter } from "./retryafter.js";
export type { BackoffOptions } from "./backoff.js";
export { isAfter, topLevelId, frameId } from "./ids.js";
export type { ChangeId } from "./ids.js";
export { refreshDelay, tokenExpiresAt } from "./jwt.js";
export { Presence } from "./presence.js";
