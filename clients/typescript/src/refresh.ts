/** Keeping one connection's token fresh: before the token's `exp`, ask the token source for a new one and
 * hand it to the server in band (`access_token`); when none comes or it is refused, ask again until the
 * token expires (then the server closes the connection, and the client reconnects with a new token). */

import { refreshDelay, tokenExpiresAt } from "./jwt.js";

export interface TokenRefreshOptions {
  /** The token source (the client's getToken). */
  fetch: () => Promise<string | null>;
  /** Send `{"type":"access_token","token":...}`; resolves on the ack, rejects on the error. */
  send: (token: string) => Promise<unknown>;
  marginMs: number;
  report: (error: unknown) => void;
}

export class TokenRefresh {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(
    private readonly options: TokenRefreshOptions,
    private current: string,
  ) {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(): void {
    const expiresAt = tokenExpiresAt(this.current);
    if (expiresAt === null || this.stopped) return;
    const delay = refreshDelay(expiresAt, Date.now(), this.options.marginMs);
    this.timer = setTimeout(() => void this.refresh(expiresAt), delay);
  }

  private async refresh(expiresAt: number): Promise<void> {
    this.timer = null;
    let token: string | null = null;
    try {
      token = await this.options.fetch();
    } catch (error) {
      this.options.report(error);
    }
    if (this.stopped) return;
    if (token && token !== this.current) {
      try {
        await this.options.send(token);
        if (this.stopped) return;
        this.current = token;
        this.schedule();
        return;
      } catch (error) {
        if (this.stopped) return;
        this.options.report(error);
      }
    }
    // No new token, or refused: ask again in a while.
    const left = expiresAt - Date.now();
    if (left > 0) this.timer = setTimeout(() => void this.refresh(expiresAt), Math.max(50, left / 4));
  }
}
