/** A broadcast channel's presence: the full state sent after subscribing, kept current by diffs. */

import type { PresenceEntry, PresenceState } from "./messages.js";

export type PresenceEvent = "join" | "update" | "leave";

export interface PresenceChange {
  event: PresenceEvent;
  key: string;
  entries: PresenceEntry[];
}

export class Presence {
  private state = new Map<string, PresenceEntry[]>();

  /** The current presences (a deep copy: the application may keep or change it). */
  snapshot(): PresenceState {
    const out: PresenceState = {};
    for (const [key, entries] of this.state) out[key] = entries;
    return JSON.parse(JSON.stringify(out)) as PresenceState;
  }

  clear(): void {
    this.state.clear();
  }

  /** Replace the state by a `presence_state`; returns what changed against the previous one (after a
   * reconnect, the application sees who left and who came while it was away). */
  replace(presences: PresenceState): PresenceChange[] {
    const before = this.state;
    this.state = new Map();
    for (const [key, entries] of Object.entries(presences ?? {})) {
      if (Array.isArray(entries) && entries.length) this.state.set(key, entries.map((e) => ({ ...e })));
    }
    const changes: PresenceChange[] = [];
    for (const [key, entries] of this.state) {
      const old = new Map((before.get(key) ?? []).map((e) => [e.presence_id, e]));
      const joins = entries.filter((e) => !old.has(e.presence_id));
      const updates = entries.filter(
        (e) => old.has(e.presence_id) && JSON.stringify(old.get(e.presence_id)?.state) !== JSON.stringify(e.state),
      );
      if (joins.length) changes.push({ event: "join", key, entries: joins });
      if (updates.length) changes.push({ event: "update", key, entries: updates });
    }
    for (const [key, entries] of before) {
      const now = new Set((this.state.get(key) ?? []).map((e) => e.presence_id));
      const leaves = entries.filter((e) => !now.has(e.presence_id));
      if (leaves.length) changes.push({ event: "leave", key, entries: leaves });
    }
    return changes;
  }

  /** Apply a `presence_diff`; returns its changes in the order join, update, leave. */
  apply(joins: PresenceState = {}, updates: PresenceState = {}, leaves: PresenceState = {}): PresenceChange[] {
    const changes: PresenceChange[] = [];
    for (const [key, entries] of Object.entries(joins)) {
      const list = this.state.get(key) ?? [];
      for (const entry of entries) {
        const at = list.findIndex((e) => e.presence_id === entry.presence_id);
        if (at >= 0) list[at] = { ...entry };
        else list.push({ ...entry });
      }
      this.state.set(key, list);
      changes.push({ event: "join", key, entries });
    }
    for (const [key, entries] of Object.entries(updates)) {
      const list = this.state.get(key) ?? [];
      for (const entry of entries) {
        const at = list.findIndex((e) => e.presence_id === entry.presence_id);
        if (at >= 0) list[at] = { ...entry };
        else list.push({ ...entry });
      }
      this.state.set(key, list);
      changes.push({ event: "update", key, entries });
    }
    for (const [key, entries] of Object.entries(leaves)) {
      const gone = new Set(entries.map((e) => e.presence_id));
      const list = (this.state.get(key) ?? []).filter((e) => !gone.has(e.presence_id));
      if (list.length) this.state.set(key, list);
      else this.state.delete(key);
      changes.push({ event: "leave", key, entries });
    }
    return changes;
  }
}
