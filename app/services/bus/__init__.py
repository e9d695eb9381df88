"""The bus between instances: how broadcasts and presence reach the other instances on one database.

A transport moves opaque packets (bytes) from one instance to all of them, in the order each sender sent
them, at most once; app/services/cluster.py builds its protocol (broadcasts, presence deltas, heartbeats,
full-state syncs) on top of that. Two transports: PostgreSQL (NOTIFY, no extra service) and Redis (PUB/SUB,
when REALTIME_REDIS_URL is set).
"""

from app.services.bus.transport import BusTransport, BusUnavailable

__all__ = ["BusTransport", "BusUnavailable"]
