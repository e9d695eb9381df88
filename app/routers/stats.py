"""GET /api/realtime/stats."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request

from app.deps import ServicesDep, SiblingsDep
from app.services.container import Services
from app.workers.figures import InstanceStats, OwnStats, fold_stats

router = APIRouter()


@router.get("/api/realtime/stats")
async def realtime_stats(request: Request, services: ServicesDep, siblings: SiblingsDep) -> InstanceStats:
    """This process's figures; with workers (REALTIME_WORKERS > 1), the whole instance's, every worker's own
    under `workers` (docs/operations.md)."""
    own = await own_stats(services)
    if siblings is None:
        return dict(own)
    own = {"worker": siblings.index, "pid": os.getpid(), **own}
    if siblings.asked_by_sibling(request.headers):
        return dict(own)
    answers = await siblings.fetch("/api/realtime/stats")
    return fold_stats(own, {i: None if answer is None else answer.json() for i, answer in answers.items()})


async def own_stats(services: Services) -> OwnStats:
    hub = services.hub
    cluster = services.cluster
    stats: OwnStats = {
        "connections": hub.connection_count,
        "channels": hub.channel_count,
        "slow_consumer_disconnects": hub.slow_consumer_disconnects,
        "last_change_id": services.feed.last_id,
        # The feed polls under sustained writes, and writers skip NOTIFY meanwhile.
        "feed_polling": services.feed.polling,
        # Row-level security: policy checks issued, and changes they covered (checks per change = ratio).
        "rls_checks": services.rls.checks_issued,
        "rls_changes": services.rls.changes_checked,
        # Broadcast channels and the bus between instances.
        "broadcasts_sent": services.broadcasts.sent,
        "bus_transport": cluster.transport,
        "bus_healthy": cluster.healthy,
        "bus_peers": cluster.peers,
        "bus_messages_received": cluster.received,
        "bus_messages_dropped": cluster.dropped,
        "capture": services.settings.realtime_capture,
    }
    if services.capture is not None and services.slot_monitor is not None:
        slot = await services.slot_monitor.check()
        stats.update(
            {
                # WAL the slot holds that the consumer has not confirmed (any instance can tell).
                "slot_lag_bytes": slot.lag_bytes,
                # How old the oldest received but unconfirmed transaction is (the consuming instance only).
                "slot_lag_seconds": services.capture.lag_seconds,
                "slot_status": slot.wal_status if slot.exists else "missing",
                "consumer": services.capture.leading,
                "logical_changes_written": services.capture.changes_written,
            }
        )
    return stats
