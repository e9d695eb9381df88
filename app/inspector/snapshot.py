"""What the inspector's API tells a service_role caller: counts and channel names, never a token, a claim,
a row or a message. Pure: built from the hub, tested without sockets."""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any

from app.services.hub import Hub


def inspector_snapshot(hub: Hub, *, max_channels: int) -> dict[str, Any]:
    """Connections by role, subscriptions by channel kind, and the `max_channels` busiest channels.

    Roles are those a token may name (REALTIME_ALLOWED_ROLES, checked at connect), so the role counts are
    bounded too. Channels are ordered by subscriptions, most first, then by name.
    """
    roles = Counter(subscriber.principal.role for subscriber in hub.subscribers())
    names = hub.channel_names()
    busiest = heapq.nsmallest(max_channels, ((-hub.subscription_count(name), name) for name in names))
    return {
        "connections": {"total": hub.connection_count, "by_role": dict(sorted(roles.items()))},
        "kinds": {
            kind: {"channels": channels, "subscriptions": subscriptions}
            for kind, (channels, subscriptions) in sorted(hub.subscriptions_by_kind().items())
        },
        "channels": [
            {"channel": name, "kind": name.partition(":")[0], "subscriptions": -negated}
            for negated, name in busiest
        ],
        "channels_total": len(names),
        "channels_listed": len(busiest),
    }
