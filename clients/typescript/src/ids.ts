/** Change ids: PostgreSQL bigints, which can exceed a JavaScript number's 2^53. They are kept as strings of
 * digits (the server accepts them as `since`) and compared without converting them to numbers. */

export type ChangeId = string;

/** Whether `id` comes after `last` (any id comes after null). Both are canonical decimal strings. */
export function isAfter(id: ChangeId, last: ChangeId | null): boolean {
  if (last === null) return true;
  if (id.length !== last.length) return id.length > last.length;
  return id > last;
}

/** The top-level `"id"` of a JSON object's text, as written (digits), or null. JSON.parse would round an id
 * past 2^53, so when the parsed number is not exact the digits are read from the text itself: a scan that
 * skips strings and nested values, so an `"id"` inside the payload is never taken for the frame's. */
export function topLevelId(text: string): ChangeId | null {
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i;
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) i++;
        else if (d === 0x22) break;
      }
      if (depth === 1 && expectKey && text.slice(start, i + 1) === '"id"') {
        const match = /^\s*:\s*"?(\d+)/.exec(text.slice(i + 1, i + 40));
        return match ? match[1] : null;
      }
      expectKey = false;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      expectKey = c === 0x7b && depth === 1;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    } else if (c === 0x2c /* , */) {
      expectKey = depth === 1;
    }
  }
  return null;
}

/** The id of a parsed frame as a string of digits: exact when the number is, else read from the text. */
export function frameId(value: unknown, text: string): ChangeId | null {
  if (typeof value === "string" && /^\d+$/.test(value)) return value;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) return null;
  return Number.isSafeInteger(value) ? String(value) : topLevelId(text);
}
