/** Reconnect delays: full-jitter exponential backoff (a delay drawn uniformly from [0, min(cap, base·2^n))),
 * so that clients dropped together by a restart do not come back together. */

export interface BackoffOptions {
  /** The ceiling of the first delay, in ms (default 500). */
  baseMs?: number;
  /** The ceiling every delay stays under, in ms (default 20,000). */
  capMs?: number;
}

export const DEFAULT_BACKOFF = { baseMs: 500, capMs: 20_000 } as const;

/** The ceiling of the delay before reconnect attempt `attempt` (0 for the first). */
export function backoffCeiling(attempt: number, options: BackoffOptions = {}): number {
  const base = options.baseMs ?? DEFAULT_BACKOFF.baseMs;
  const cap = options.capMs ?? DEFAULT_BACKOFF.capMs;
  // 2^attempt overflows to Infinity past ~1000 attempts; min() keeps it at the cap.
  return Math.min(cap, base * 2 ** Math.max(0, attempt));
}

/** The delay before reconnect attempt `attempt`: uniform in [0, ceiling). `random` returns [0, 1). */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  return Math.floor(random() * backoffCeiling(attempt, options));
}
