"""What every dedicated connection of the service asks of its session (the listener, the feed, the bus,
the logical consumer and its replication stream)."""

from __future__ import annotations

from typing import Any, Final

# A silently dropped link (no FIN) must end the connection, or whatever waits on it would wait forever.
KEEPALIVES: Final[dict[str, Any]] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
