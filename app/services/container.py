"""The set of services one application instance runs with."""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from app.channels.broadcast import BroadcastChannels
from app.channels.kind import ChannelKinds
from app.config import Settings
from app.services.auth import TokenVerifier
from app.services.changes import ChangeFeed
from app.services.cluster import Cluster
from app.services.hub import Hub
from app.services.limits import ConnectionLimiter
from app.services.listener import ChangeListener
from app.services.logical_capture import LogicalCapture
from app.services.loop_lag import LoopLag
from app.services.replay import Replayer
from app.services.replication_slot import SlotMonitor
from app.services.rls import RowSecurity
from app.services.tables import TableDirectory
from app.services.traffic import Traffic


@dataclass(frozen=True, slots=True)
class Services:
    """Everything the routers may use; created and closed by the lifespan in app.main."""

    settings: Settings
    pool: AsyncConnectionPool
    hub: Hub
    verifier: TokenVerifier
    limits: ConnectionLimiter
    tables: TableDirectory
    listener: ChangeListener
    feed: ChangeFeed
    rls: RowSecurity
    replayer: Replayer
    channels: ChannelKinds
    broadcasts: BroadcastChannels
    cluster: Cluster
    traffic: Traffic
    loop_lag: LoopLag = field(default_factory=LoopLag)
    capture: LogicalCapture | None = None  # logical mode only
    slot_monitor: SlotMonitor | None = None
