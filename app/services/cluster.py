"""The instances on one database as one service: broadcasts and presence exchanged over a bus.

Every instance (an *origin*, a random id per start) sends, over the bus (app/services/bus/):
- `b` broadcast: a client's message, as the frame to deliver (at most once; only while peers exist);
- `p` presence delta: its own connections' joins, updates and leaves, numbered 1, 2, 3, ... (`s`);
- `h` heartbeat every timeout/3 seconds, with its latest delta number;
- `q` sync request and `s` full state: its own presences with the number they include;
- `x` goodbye, when it shuts down.

A receiver applies an origin's deltas in order. A gap in the numbers (a delta or a heartbeat it missed:
the bus dropped packets while a link was down), an origin it has never heard of, or its own reconnection
makes it ask for the full state, which replaces what it held of that origin: after any outage, every
instance ends with the same presences. An origin unheard of for `timeout` seconds while the bus is up (it
was killed) has all its presences leave. Packets are JSON arrays `[packet number, message, ...]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from app.services.bus import BusTransport, BusUnavailable
from app.services.presence import Presence, PresenceDiff, PresenceTable

log = logging.getLogger(__name__)

# Messages waiting to be sent while a send is under way; past this they are dropped (and counted): a bus
# that cannot keep up must not grow memory. Presence repairs itself through the numbers.
MAX_OUTBOX = 10_000


@dataclass(slots=True)
class Peer:
    seq: int = 0  # the last delta applied
    last_seen: float = 0.0
    syncing: bool = True  # waiting for its full state: deltas are ignored until it arrives


class Cluster:
    """This instance's side of the bus: sends its broadcasts and presence, applies everyone else's."""

    def __init__(
        self,
        transport: BusTransport,
        presence: PresenceTable,
        *,
        timeout: float,
        on_broadcast: Callable[[str, str], None],
        on_presence: Callable[[str, PresenceDiff], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.origin = secrets.token_hex(8)
        self._transport = transport
        self._presence = presence
        self._timeout = timeout
        self._on_broadcast = on_broadcast
        self._on_presence = on_presence
        self._clock = clock
        self._seq = 0
        self._packet = 0
        self._peers: dict[str, Peer] = {}
        self._outbox: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._pending = asyncio.Event()
        self.dropped = 0  # messages never handed to the bus
        self.received = 0

    @property
    def transport(self) -> str:
        return self._transport.name

    @property
    def healthy(self) -> bool:
        return self._transport.connected

    @property
    def peers(self) -> int:
        return len(self._peers)

    async def run(self) -> None:
        """Until cancelled: receive, send, heartbeat."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._transport.run(self._on_packet, self._on_connected))
            tasks.create_task(self._send_forever())
            tasks.create_task(self._heartbeat_forever())

    async def close(self) -> None:
        """Say goodbye (best effort: the others drop this instance's presences at once), then let go."""
        with contextlib.suppress(BusUnavailable, OSError):
            await asyncio.wait_for(self._transport.send([self._packet_of([self._message("x")])]), 2)
        await self._transport.close()

    # Outbound

    def broadcast(self, channel: str, frame: str, *, wait: bool = True) -> asyncio.Future[None] | None:
        """Send a client's broadcast to the other instances. None when there is nobody to send it to, or
        nobody waits (`wait` false: a message without a ref); else a future that is done once the bus
        took it (or fails with BusUnavailable)."""
        if not self._peers:
            return None
        return self._enqueue(self._message("b", c=channel, f=frame), wait=wait)

    def track(self, channel: str, presence_id: str, presence: Presence) -> PresenceDiff:
        """Join or update one of this instance's presences; returns the diff for local subscribers."""
        diff = self._presence.put(self.origin, channel, presence_id, presence)
        if diff:
            self._seq += 1
            entry = [presence_id, presence.key, presence.state]
            joins, updates = ([entry], []) if diff.joins else ([], [entry])
            self._enqueue(self._message("p", s=self._seq, c=channel, j=joins, u=updates))
        return diff

    def untrack(self, channel: str, presence_id: str) -> PresenceDiff:
        diff = self._presence.remove(self.origin, channel, presence_id)
        if diff:
            self._seq += 1
            self._enqueue(self._message("p", s=self._seq, c=channel, l=[presence_id]))
        return diff

    def _message(self, kind: str, **fields: Any) -> bytes:
        return orjson.dumps({"t": kind, "o": self.origin, **fields})

    def _enqueue(self, message: bytes, *, wait: bool = False) -> asyncio.Future[None] | None:
        if len(self._outbox) >= MAX_OUTBOX:
            self.dropped += 1
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(BusUnavailable("the bus between instances is not keeping up"))
            return future if wait else None
        self._outbox.append(message)
        self._pending.set()
        if not wait:
            return None
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    async def _send_forever(self) -> None:
        # One send at a time: packets leave in the order their messages were queued.
        while True:
            await self._pending.wait()
            self._pending.clear()
            messages, self._outbox = self._outbox, []
            waiters, self._waiters = self._waiters, []
            error: BusUnavailable | None = None
            try:
                await self._transport.send(self._pack(messages))
            except BusUnavailable as failure:
                error = failure
                self.dropped += len(messages)
            for waiter in waiters:
                if not waiter.done():
                    if error is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(error)
                        waiter.exception()  # retrieved: a sender that did not wait logs nothing

    def _pack(self, messages: list[bytes]) -> list[bytes]:
        limit = self._transport.max_packet_bytes
        packets: list[bytes] = []
        batch: list[bytes] = []
        size = 0
        for message in messages:
            if batch and limit is not None and size + len(message) + 32 > limit:
                packets.append(self._packet_of(batch))
                batch, size = [], 0
            batch.append(message)
            size += len(message) + 1
        if batch:
            packets.append(self._packet_of(batch))
        return packets

    def _packet_of(self, messages: list[bytes]) -> bytes:
        self._packet += 1
        return b"[" + str(self._packet).encode() + b"," + b",".join(messages) + b"]"

    async def _heartbeat_forever(self) -> None:
        interval = self._timeout / 3
        while True:
            await asyncio.sleep(interval)
            if not self._transport.connected:
                continue  # nobody can be heard while the bus is down: expire no one for it
            self._enqueue(self._message("h", s=self._seq))
            self._expire_peers()

    def _expire_peers(self) -> None:
        deadline = self._clock() - self._timeout
        for origin in [o for o, peer in self._peers.items() if peer.last_seen < deadline]:
            log.warning("bus_peer_lost origin=%s: its presences leave", origin)
            self._forget(origin)

    def _forget(self, origin: str) -> None:
        self._peers.pop(origin, None)
        for channel, diff in self._presence.drop_origin(origin).items():
            self._on_presence(channel, diff)

    # Inbound

    def _on_connected(self) -> None:
        """(Re)connected: whatever was missed meanwhile is repaired by everyone's full state."""
        now = self._clock()
        for peer in self._peers.values():
            peer.last_seen = now
            peer.syncing = True
        self._enqueue(self._message("q", to=None))
        self._enqueue(self._message("h", s=self._seq))

    def _on_packet(self, data: bytes) -> None:
        try:
            messages = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("bus_packet_malformed bytes=%d", len(data))
            return
        if not isinstance(messages, list):
            return
        for message in messages[1:]:
            try:
                self._handle(message)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                log.warning("bus_message_malformed")

    def _handle(self, message: dict[str, Any]) -> None:
        origin = message["o"]
        if origin == self.origin:
            return
        self.received += 1
        kind = message["t"]
        if kind == "x":
            self._forget(origin)
            return
        peer = self._peers.get(origin)
        if peer is None:
            peer = self._peers[origin] = Peer()
            if kind != "s":
                self._request_state(origin)
        peer.last_seen = self._clock()
        if kind == "b":
            self._on_broadcast(str(message["c"]), str(message["f"]))
        elif kind == "p":
            self._apply_delta(origin, peer, message)
        elif kind == "h":
            # Behind (a delta was lost), or still waiting for a full state whose request may have been lost.
            if peer.syncing or int(message["s"]) != peer.seq:
                self._resync(origin, peer)
        elif kind == "q":
            if message.get("to") in (None, self.origin):
                self._send_state()
        elif kind == "s":
            self._apply_state(origin, peer, message)

    def _apply_delta(self, origin: str, peer: Peer, message: dict[str, Any]) -> None:
        seq = int(message["s"])
        if peer.syncing or seq <= peer.seq:
            return  # included in the full state on its way, or seen already
        if seq != peer.seq + 1:
            self._resync(origin, peer)
            return
        peer.seq = seq
        channel = str(message["c"])
        diff = PresenceDiff()
        for presence_id, key, state in [*message.get("j", ()), *message.get("u", ())]:
            diff.merge(self._presence.put(origin, channel, str(presence_id), Presence(str(key), str(state))))
        for presence_id in message.get("l", ()):
            diff.merge(self._presence.remove(origin, channel, str(presence_id)))
        if diff:
            self._on_presence(channel, diff)

    def _apply_state(self, origin: str, peer: Peer, message: dict[str, Any]) -> None:
        seq = int(message["s"])
        if not peer.syncing and seq <= peer.seq:
            return
        state = {
            str(channel): {str(pid): Presence(str(key), str(st)) for pid, (key, st) in presences.items()}
            for channel, presences in message["p"].items()
        }
        peer.seq, peer.syncing = seq, False
        for channel, diff in self._presence.replace_origin(origin, state).items():
            self._on_presence(channel, diff)

    def _resync(self, origin: str, peer: Peer) -> None:
        peer.syncing = True
        self._request_state(origin)

    def _request_state(self, origin: str) -> None:
        self._enqueue(self._message("q", to=origin))

    def _send_state(self) -> None:
        state = {
            channel: {pid: [p.key, p.state] for pid, p in presences.items()}
            for channel, presences in self._presence.origin_state(self.origin).items()
        }
        self._enqueue(self._message("s", s=self._seq, p=state))
