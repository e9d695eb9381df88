/** Outgoing frames, paced to the server's message rate (REALTIME_MAX_MESSAGES_PER_SECOND, 50 by default):
 * after a reconnect a client resubscribes to every channel at once, and a burst over the rate would be
 * dropped by the server. A token bucket: bursts of `perSecond`, then `perSecond` frames a second. */

export class Outbox {
  private queue: string[] = [];
  private tokens: number;
  private last: number;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly perSecond: number,
    private readonly write: (frame: string) => void,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = perSecond;
    this.last = now();
  }

  send(frame: string): void {
    this.queue.push(frame);
    this.flush();
  }

  /** Forget what is queued (the socket it was meant for is gone). */
  clear(): void {
    this.queue = [];
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private flush(): void {
    const now = this.now();
    this.tokens = Math.min(this.perSecond, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    while (this.queue.length && this.tokens >= 1) {
      this.tokens -= 1;
      this.write(this.queue.shift() as string);
    }
    if (this.queue.length && this.timer === null) {
      const wait = Math.ceil(((1 - this.tokens) / this.perSecond) * 1000);
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush();
      }, wait);
    }
  }
}
