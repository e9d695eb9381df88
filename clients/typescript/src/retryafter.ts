/** How long a server that refused the client for load asked it to wait (pure). Two places say so: the
 * `Retry-After` header of an HTTP refusal of the opening handshake (the server's 503 at capacity, a proxy's
 * 429 or 503: readable in Node with the `ws` package, never in a browser), and the `retry_after` of a
 * `subscribe_failed` refused because too many subscribes wait for the database. The client waits at least
 * that long plus its usual full-jitter draw, so that a fleet refused together does not return together. */

/** A hint past this is taken as this: a proxy announcing an hour of maintenance should not park a client
 * for an hour. */
export const MAX_RETRY_AFTER_MS = 60_000;

// RFC 9110's IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), which senders must use; a numeric zone is
// accepted too. Anything else is not handed to Date.parse, which would read almost any text as a date.
const HTTP_DATE = /^[A-Za-z]{3},\s+\d{1,2}\s+[A-Za-z]{3}\s+\d{4}\s+\d{2}:\d{2}:\d{2}\s+(GMT|UTC|[+-]\d{4})$/;

/** The ms a `Retry-After` header value asks for, counted from `nowMs`: delay-seconds ("120") or an
 * HTTP-date. null when missing or malformed (a negative number included); a past date is 0; at most
 * MAX_RETRY_AFTER_MS. */
export function parseRetryAfter(value: string | null | undefined, nowMs: number): number | null {
  if (typeof value !== "string") return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Math.min(MAX_RETRY_AFTER_MS, Number(text) * 1000);
  if (!HTTP_DATE.test(text)) return null;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return null;
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, at - nowMs));
}

/** The `retry_after` of an error frame (seconds) in ms; anything but a non-negative number is no hint. */
export function frameRetryAfter(value: unknown): number | null {
  if (typeof value !== "number" || Number.isNaN(value) || value < 0) return null;
  return Math.min(MAX_RETRY_AFTER_MS, value * 1000);
}

/** What the `ws` package hands to an `unexpected-response` listener (the parts read here). */
interface RefusalResponse {
  statusCode?: number;
  headers?: Record<string, string | string[] | undefined>;
}
interface EventEmitterLike {
  once(event: string, listener: (...args: unknown[]) => void): unknown;
  close(): void;
}

/** When `socket` is the `ws` package's (a Node EventEmitter), calls `refused` with the Retry-After of a
 * handshake the server answers with an HTTP status instead of the upgrade, then aborts the handshake (as
 * `ws` does on its own when nobody listens: the socket closes with 1006). Browsers' and Node 22's global
 * WebSocket do not show the response: nothing is read there. */
export function onRefusal(socket: unknown, refused: (retryAfterMs: number | null) => void): void {
  const emitter = socket as Partial<EventEmitterLike>;
  if (typeof emitter.once !== "function" || typeof emitter.close !== "function") return;
  emitter.once("unexpected-response", (_request: unknown, response: unknown) => {
    const header = (response as RefusalResponse | undefined)?.headers?.["retry-after"];
    refused(parseRetryAfter(Array.isArray(header) ? header[0] : header, Date.now()));
    (emitter as EventEmitterLike).close();
  });
}
