// The test page: a live list (useRealtime with load(), under StrictMode, re-rendering on a timer with
// inline callbacks) or the documentation's example, chosen by ?mode=.
import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { RealtimeProvider, useRealtime, usePresence, useBroadcast } from "@fluxbase-realtime/react";
import { ProductList } from "./docs-example.js";

declare global {
  interface Window {
    __CONFIG: { url: string; table: string };
    __counts: { opens: number; subscribes: number };
    __received: unknown[];
  }
}

interface Item {
  id: number;
  name: string;
  n: number;
}

window.__counts = { opens: 0, subscribes: 0 };
window.__received = [];

/** The browser's WebSocket, counting what the page does with it (opens, subscribes). */
class CountingWebSocket extends WebSocket {
  constructor(url: string) {
    super(url);
    this.addEventListener("open", () => window.__counts.opens++);
  }
  override send(data: string): void {
    if (JSON.parse(data).type === "subscribe") window.__counts.subscribes++;
    super.send(data);
  }
}

function LiveList() {
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const timer = setInterval(() => setTick((t) => t + 1), 50); // re-render often: new inline callbacks
    return () => clearInterval(timer);
  }, []);
  const { data, connected, loading } = useRealtime<Item>(`table:public.${window.__CONFIG.table}`, {
    load: async () => (await fetch(`/rows?table=${window.__CONFIG.table}`)).json(),
    key: (row) => row.id,
  });
  return (
    <div>
      <div id="status" data-connected={String(connected)} data-loading={String(loading)} data-tick={tick} />
      <ul id="rows">
        {data.map((row) => (
          <li key={row.id} data-row={JSON.stringify(row)} />
        ))}
      </ul>
    </div>
  );
}

function Room({ name }: { name: string }) {
  const presences = usePresence(`broadcast:${window.__CONFIG.table}`, { name }); // an inline object
  const { send, connected } = useBroadcast(`broadcast:${window.__CONFIG.table}`, "ping", (m) =>
    window.__received.push(m.payload),
  );
  return (
    <div id="room" data-connected={String(connected)} data-presence={JSON.stringify(presences)}>
      <button id="send" onClick={() => void send({ from: name })} />
    </div>
  );
}

/** A Room that can be unmounted, next to a hook that keeps the page's client (and socket) in use. */
function Rooms() {
  const [mounted, setMounted] = useState(true);
  useBroadcast(`broadcast:${window.__CONFIG.table}-keeper`, "none");
  return (
    <div>
      <button id="unmount" onClick={() => setMounted(false)} />
      {mounted ? <Room name="page" /> : null}
    </div>
  );
}

const mode = new URLSearchParams(location.search).get("mode");
const options = { WebSocket: CountingWebSocket, backoff: { baseMs: 50, capMs: 500 } };
createRoot(document.getElementById("root") as HTMLElement).render(
  <StrictMode>
    <RealtimeProvider url={window.__CONFIG.url} options={options}>
      {mode === "docs" ? <ProductList /> : mode === "room" ? <Rooms /> : <LiveList />}
    </RealtimeProvider>
  </StrictMode>,
);
