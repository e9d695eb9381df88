// The inspector page's script: asks for a service_role token, then shows this instance's connections and
// channels (GET /api/realtime/inspector), tails one channel and its presence, and sends test broadcasts,
// all through the SDK. The token stays in this page's memory: never stored, never put in the page's URL.
// Everything the server sends is rendered as text (textContent), never as HTML.
import { RealtimeClient, type BroadcastMessage, type Change, type Channel, type PresenceState } from "@fluxbase-realtime/client";

const REFRESH_MS = 2_000;
const MAX_ITEMS = 200; // the tail keeps this many entries; older ones are dropped from the page

const element = <T extends HTMLElement>(id: string): T => {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
};

const ui = {
  login: element<HTMLFormElement>("login"),
  token: element<HTMLInputElement>("token"),
  status: element("status"),
  error: element("error"),
  main: element("main"),
  counts: element("counts"),
  channels: element<HTMLTableElement>("channels"),
  channelsNote: element("channels-note"),
  tailForm: element<HTMLFormElement>("tail-form"),
  channel: element<HTMLInputElement>("channel"),
  filter: element<HTMLInputElement>("filter"),
  stop: element<HTMLButtonElement>("stop"),
  tailStatus: element("tail-status"),
  room: element("room"),
  presence: element("presence"),
  presenceCount: element("presence-count"),
  sendForm: element<HTMLFormElement>("send-form"),
  event: element<HTMLInputElement>("event"),
  payload: element<HTMLInputElement>("payload"),
  changes: element("changes"),
};

interface InspectorState {
  connections: { total: number; by_role: Record<string, number> };
  kinds: Record<string, { channels: number; subscriptions: number }>;
  channels: { channel: string; kind: string; subscriptions: number }[];
  channels_total: number;
  channels_listed: number;
  last_change_id: number;
  capture: string;
  bus_transport: string;
  bus_healthy: boolean;
}

let token = "";
let client: RealtimeClient | null = null;
let refreshTimer: ReturnType<typeof setTimeout> | null = null;
let tailed: Channel | null = null;

function setText(target: HTMLElement, text: string, state?: string): void {
  target.textContent = text;
  if (state !== undefined) target.dataset.state = state;
}

function showError(message: string | null): void {
  ui.error.hidden = message === null;
  ui.error.textContent = message ?? "";
}

/** The API's state, or throws with the server's sentence (401, 403: the token is not a service_role one). */
async function fetchState(): Promise<InspectorState> {
  const response = await fetch("/api/realtime/inspector", {
    headers: { Authorization: `Bearer ${token}` },
    cache: "no-store",
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${body.error ?? response.statusText}`);
  return body as InspectorState;
}

function renderState(state: InspectorState): void {
  const rows: [string, string][] = [
    ["connections", String(state.connections.total)],
    ...Object.entries(state.connections.by_role).map(([role, n]): [string, string] => [`  as ${role}`, String(n)]),
    ...Object.entries(state.kinds).map(([kind, c]): [string, string] => [
      `${kind} channels`,
      `${c.channels} (${c.subscriptions} subscriptions)`,
    ]),
    ["last change id", String(state.last_change_id)],
    ["capture", state.capture],
    ["bus", `${state.bus_transport} (${state.bus_healthy ? "healthy" : "unhealthy"})`],
  ];
  ui.counts.replaceChildren(
    ...rows.flatMap(([name, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dd.dataset.name = name.trim();
      return [dt, dd];
    }),
  );
  ui.channels.tBodies[0].replaceChildren(
    ...state.channels.map((entry) => {
      const tr = document.createElement("tr");
      tr.dataset.channel = entry.channel;
      for (const text of [entry.channel, entry.kind, String(entry.subscriptions)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      return tr;
    }),
  );
  ui.channelsNote.textContent =
    state.channels_listed < state.channels_total
      ? `the ${state.channels_listed} busiest of ${state.channels_total} channels`
      : `${state.channels_total} channel${state.channels_total === 1 ? "" : "s"}`;
}

async function refresh(): Promise<void> {
  try {
    renderState(await fetchState());
    showError(null);
  } catch (error) {
    showError(`stats: ${(error as Error).message}`);
  }
  refreshTimer = setTimeout(() => void refresh(), REFRESH_MS);
}

function addEntry(type: string, heading: string, body: unknown, id?: string): void {
  const li = document.createElement("li");
  li.dataset.type = type;
  if (id !== undefined) li.dataset.id = id;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = heading;
  const pre = document.createElement("div");
  pre.textContent = JSON.stringify(body);
  li.append(meta, pre);
  ui.changes.prepend(li);
  while (ui.changes.childElementCount > MAX_ITEMS) ui.changes.lastElementChild?.remove();
}

function renderPresence(state: PresenceState): void {
  const keys = Object.keys(state).sort();
  ui.presenceCount.textContent = String(keys.length);
  ui.presence.replaceChildren(
    ...keys.map((key) => {
      const li = document.createElement("li");
      li.dataset.key = key;
      li.textContent = `${key}: ${state[key].map((entry) => JSON.stringify(entry.state)).join(", ")}`;
      return li;
    }),
  );
}

async function stopTail(): Promise<void> {
  const channel = tailed;
  tailed = null;
  ui.stop.disabled = true;
  ui.room.hidden = true;
  ui.presence.replaceChildren();
  ui.presenceCount.textContent = "0";
  setText(ui.tailStatus, "", "idle");
  await channel?.unsubscribe();
}

async function startTail(name: string, filter: string): Promise<void> {
  await stopTail();
  if (!client) return;
  const isBroadcast = name.startsWith("broadcast:");
  // Broadcast channels: the inspector's own test broadcasts come back too (self), as a round trip.
  const channel = client.channel(name, isBroadcast ? { self: true } : filter ? { filter } : {});
  tailed = channel;
  ui.changes.replaceChildren();
  channel.on("status", (status) => {
    if (tailed === channel) setText(ui.tailStatus, `${name}: ${status}`, status);
  });
  if (isBroadcast) {
    channel
      .on("broadcast", "*", (message: BroadcastMessage) =>
        addEntry("broadcast", `${message.id ? `#${message.id} ` : ""}${message.event}`, message.payload, message.id),
      )
      .on("presence", "sync", (state: PresenceState) => renderPresence(state));
  } else {
    channel.on("*", (change: Change) =>
      addEntry(
        change.type,
        `#${change.id} ${change.type} ${change.schema}.${change.table}`,
        change.type === "DELETE" ? { old_record: change.old_record } : { record: change.record, old_record: change.old_record },
        change.id,
      ),
    );
  }
  setText(ui.tailStatus, `${name}: subscribing`, "subscribing");
  ui.stop.disabled = false;
  try {
    await channel.subscribe();
    if (isBroadcast && tailed === channel) {
      ui.room.hidden = false;
      renderPresence(channel.presence());
    }
  } catch (error) {
    if (tailed === channel) {
      tailed = null;
      ui.stop.disabled = true;
      setText(ui.tailStatus, `${name}: ${(error as Error).message}`, "error");
    }
  }
}

async function signIn(candidate: string): Promise<void> {
  token = candidate;
  try {
    renderState(await fetchState());
  } catch (error) {
    token = "";
    setText(ui.status, "signed out", "error");
    showError((error as Error).message);
    return;
  }
  showError(null);
  ui.token.value = "";
  if (refreshTimer !== null) clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => void refresh(), REFRESH_MS);
  await stopTail();
  client?.disconnect();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  client = new RealtimeClient(`${scheme}://${location.host}/realtime`, { token });
  client.on("status", (status) => {
    const shown = status === "open" ? "connected" : status;
    setText(ui.status, shown, shown);
  });
  client.on("error", (error) => showError(`realtime: ${(error as Error).message ?? String(error)}`));
  client.connect();
  ui.main.hidden = false;
}

ui.login.addEventListener("submit", (event) => {
  event.preventDefault();
  void signIn(ui.token.value.trim());
});
ui.tailForm.addEventListener("submit", (event) => {
  event.preventDefault();
  void startTail(ui.channel.value.trim(), ui.filter.value.trim());
});
ui.stop.addEventListener("click", () => void stopTail());
ui.sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const channel = tailed;
  if (!channel) return;
  let payload: unknown;
  try {
    payload = ui.payload.value.trim() ? JSON.parse(ui.payload.value) : null;
  } catch {
    showError("the payload is not JSON");
    return;
  }
  channel.send(ui.event.value.trim(), payload).then(
    () => showError(null),
    (error: Error) => showError(`broadcast: ${error.message}`),
  );
});
