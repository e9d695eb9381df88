/** A table's rows as the application holds them, keyed by primary key, kept by applying changes.
 *
 * Applied in id order after a load taken once the subscription was acked, changes make the rows equal to
 * the table (or the filter's view of it): the last change of each row decides it, and rows without one
 * are as loaded. So an INSERT of a row already held replaces it, an UPDATE of a row not held adds it
 * (its INSERT came before the load), and a DELETE of a row not held is ignored. */

import type { Change } from "@fluxbase-realtime/client";

export type RowKey = string | number;
export type KeyOf<Row> = (row: Row) => RowKey;

/** A key function: the given one, else the primary key column(s), else `id`. */
export function keyFunction<Row>(key?: KeyOf<Row>, primaryKey?: string | string[]): KeyOf<Row> {
  if (key) return key;
  const columns = primaryKey === undefined ? ["id"] : Array.isArray(primaryKey) ? primaryKey : [primaryKey];
  if (columns.length === 1) {
    const column = columns[0];
    return (row) => (row as Record<string, unknown>)[column] as RowKey;
  }
  return (row) => JSON.stringify(columns.map((c) => (row as Record<string, unknown>)[c]));
}

export class Rows<Row> {
  private rows = new Map<RowKey, Row>();

  constructor(private readonly keyOf: KeyOf<Row>) {}

  replace(rows: readonly Row[]): void {
    this.rows = new Map(rows.map((row) => [this.keyOf(row), row]));
  }

  clear(): void {
    this.rows.clear();
  }

  /** Apply one change; whether the rows changed. */
  apply(change: Change<Row>): boolean {
    switch (change.type) {
      case "INSERT":
      case "UPDATE": {
        if (!change.record) return false;
        const key = this.keyOf(change.record);
        if (change.type === "UPDATE" && change.old_record) {
          const oldKey = this.keyOf(change.old_record as Row);
          if (oldKey !== undefined && oldKey !== key) this.rows.delete(oldKey); // the key itself changed
        }
        this.rows.set(key, change.record);
        return true;
      }
      case "DELETE": {
        if (!change.old_record) return false;
        return this.rows.delete(this.keyOf(change.old_record as Row));
      }
      case "TRUNCATE": {
        // One partition's rows are gone, and which rows those were is unknown here: the channel's
        // `reset` that follows loads the table again (without load(), the rows are kept).
        if (change.partition) return false;
        const had = this.rows.size > 0;
        this.rows.clear();
        return had;
      }
      default:
        return false;
    }
  }

  list(): Row[] {
    return [...this.rows.values()];
  }
}
