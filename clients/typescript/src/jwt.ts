/** Reading a JWT's `exp` to refresh it in time. Not verified: the server verifies; the client only needs to
 * know when the token it holds stops working. */

/** The token's `exp` in ms since the epoch, or null when it has none or cannot be read. */
export function tokenExpiresAt(token: string): number | null {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const claims: unknown = JSON.parse(decodeBase64(padded));
    if (claims && typeof claims === "object" && "exp" in claims) {
      const exp = (claims as { exp: unknown }).exp;
      if (typeof exp === "number" && Number.isFinite(exp)) return exp * 1000;
    }
  } catch {
    return null;
  }
  return null;
}

function decodeBase64(text: string): string {
  // atob exists in browsers and in Node >= 16; the claims are UTF-8.
  const binary = atob(text);
  const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/** When to refresh a token that expires at `expiresAt`: `marginMs` before, but never later than halfway
 * through what is left (a short-lived token is refreshed at half its remaining life). */
export function refreshDelay(expiresAt: number, now: number, marginMs: number): number {
  const left = expiresAt - now;
  if (left <= 0) return 0;
  return Math.max(0, left - Math.min(marginMs, left / 2));
}
