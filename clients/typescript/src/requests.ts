/** Requests waiting for their answer: each client message with a `ref` is settled by the `ack` or `error`
 * that echoes it, or failed when its socket closes. */

import { RealtimeError, type ServerFrame } from "./messages.js";
import type { Answer } from "./subscription.js";

type Pending = { resolve: (frame: ServerFrame) => void; reject: (error: unknown) => void; answer?: Answer };

export class Requests {
  private readonly pending = new Map<string, Pending>();
  private refs = 0;

  /** Send `message` with a fresh ref through `write`; `answer` is called as the reply is read. */
  send(write: (frame: string) => void, message: Record<string, unknown>, answer?: Answer): Promise<ServerFrame> {
    const ref = `${++this.refs}`;
    return new Promise((resolve, reject) => {
      this.pending.set(ref, { resolve, reject, answer });
      write(JSON.stringify({ ...message, ref }));
    });
  }

  /** Settle the request this `ack` or `error` answers; false when it answers none of ours. */
  settle(frame: ServerFrame): boolean {
    if (frame.ref === undefined || (frame.type !== "ack" && frame.type !== "error")) return false;
    const ref = String(frame.ref);
    const pending = this.pending.get(ref);
    if (!pending) return false;
    this.pending.delete(ref);
    if (frame.type === "ack") {
      pending.answer?.ack(frame);
      pending.resolve(frame);
    } else {
      const error = RealtimeError.from(frame);
      pending.answer?.error(error);
      pending.reject(error);
    }
    return true;
  }

  /** The socket is gone: every request fails with `error`. */
  failAll(error: unknown): void {
    const failed = [...this.pending.values()];
    this.pending.clear();
    for (const pending of failed) {
      pending.answer?.error(error);
      pending.reject(error);
    }
  }
}
