"""The application factory and the lifespan that owns every long-lived service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from app import protocol
from app.channels.broadcast import BroadcastChannels
from app.channels.kind import ChannelKinds
from app.channels.presence import PresenceRooms
from app.channels.table import TableChannels
from app.config import Settings
from app.errors import install_error_handlers
from app.filters.parse import FilterLimits
from app.inspector.router import inspector_router
from app.metrics import RealtimeCollector, metrics_registry
from app.routers import asyncapi, broadcast, health, metrics, realtime, stats
from app.services.auth import TokenVerifier
from app.services.bus import BusTransport
from app.services.bus.postgres import PostgresTransport
from app.services.bus.redis import RedisTransport
from app.services.change_frames import Change, ChangeFramer
from app.services.changes import SESSION_OPTIONS, ChangeFeed
from app.services.channel_access import ChannelAccess
from app.services.cluster import Cluster
from app.services.container import Services
from app.services.hub import Hub
from app.services.limits import ConnectionLimiter
from app.services.listener import ChangeListener
from app.services.logical_capture import LogicalCapture
from app.services.presence import PresenceTable
from app.services.replay import Replayer
from app.services.replication_slot import SlotMonitor, prepare_capture
from app.services.retention import ChangeLogPruner
from app.services.rls import RowSecurity
from app.services.table_views import GroupFrames, TableViews
from app.services.tables import TableDirectory
from app.services.traffic import Traffic
from app.workers.siblings import Siblings

log = logging.getLogger(__name__)


def logical_capture(settings: Settings, conninfo: str, on_written: Callable[[], None]) -> LogicalCapture:
    return LogicalCapture(
        conninfo,
        slot=settings.realtime_slot,
        publication=settings.realtime_publication,
        batch_size=settings.realtime_logical_batch,
        batch_bytes=settings.realtime_logical_batch_bytes,
        takeover_interval=settings.realtime_consumer_takeover_interval,
        on_written=on_written,
    )


def create_app(settings: Settings, *, siblings: Siblings | None = None) -> FastAPI:
    """Build an isolated application; nothing connects until the lifespan starts. `siblings`: the other
    workers of this instance (app.workers), whose figures the stats and /metrics include."""
    if not settings.database_url:
        raise ValueError("create_app needs settings.database_url (the CLI resolves the embedded database)")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conninfo = settings.database_url or ""
        pool = AsyncConnectionPool(
            conninfo,
            min_size=2,
            max_size=settings.realtime_pool_size,
            kwargs={"autocommit": True, "application_name": "fluxbase-realtime", "options": SESSION_OPTIONS},
            open=False,
        )
        await pool.open(wait=True, timeout=30)
        async with pool.connection() as conn:
            await conn.execute(
                "SELECT fluxbase_realtime.configure_notify_channel(%s)", (settings.realtime_notify_channel,)
            )
            await prepare_capture(
                conn,
                settings.realtime_capture,
                settings.realtime_publication,
                settings.realtime_slot,
                drain=lambda lsn: asyncio.wait_for(
                    logical_capture(settings, conninfo, lambda: None).drain(lsn),
                    settings.realtime_slot_drain_timeout,
                ),
            )
        hub = Hub(
            send_queue_size=settings.realtime_send_queue_size,
            slow_client_timeout=settings.realtime_slow_client_timeout,
            broadcast_flush_interval=settings.realtime_broadcast_flush_interval,
        )

        def publish(changes: Sequence[Change], per_group: Mapping[int, GroupFrames]) -> None:
            # A single change has nothing to coalesce: it is written at once, with no frames held.
            with hub.batch() if len(changes) > 1 else contextlib.nullcontext():
                for change in changes:
                    frames = per_group.get(change.id)
                    if frames is None:
                        hub.publish(change.channel, change.frame)
                    else:
                        hub.publish_per_group(change.channel, frames)

        framer = ChangeFramer()
        # Leave pool connections for the feed's own reads and for subscribes while checks run.
        rls = RowSecurity(pool, concurrency=max(1, settings.realtime_pool_size - 3))
        views = TableViews(pool, framer, rls)

        def authorize(changes: Sequence[Change]) -> Awaitable[dict[int, GroupFrames]]:
            # Row-level security and row filters, for the channels that need them (none: at once).
            return views.frames(changes, hub.groups_by_filter, hub.filters, hub.shaped)

        def report_gap(after_id: int, head: int) -> None:
            # Live subscribers would otherwise never learn that changes in (after_id, head] are gone.
            for channel in hub.channel_names():
                hub.publish(
                    channel,
                    protocol.encode_error(
                        f"changes after {after_id} up to {head} were not captured or are no longer retained: "
                        "reload, then continue from the changes that follow",
                        channel=channel,
                        code="replay_gap",
                    ),
                )

        feed = ChangeFeed(
            pool,
            conninfo,
            framer,
            publish,
            authorize=authorize,
            wait_for_room=hub.wait_for_room,
            batch_size=settings.realtime_fetch_batch,
            batch_bytes=settings.realtime_fetch_batch_bytes,
            busy_interval=settings.realtime_busy_pass_interval,
            poll_grace=settings.realtime_poll_grace,
            idle_poll_interval=settings.realtime_idle_poll_interval,
            on_gap=report_gap,
            max_waiting=settings.realtime_max_pending_subscribes,
        )
        await feed.start_at_head()
        listener = ChangeListener(conninfo, settings.realtime_notify_channel, feed.wake)
        tables = TableDirectory(pool, max_waiting=settings.realtime_max_pending_subscribes)
        replayer = Replayer(
            pool,
            hub,
            feed,
            framer,
            views,
            batch=settings.realtime_fetch_batch,
            batch_bytes=settings.realtime_fetch_batch_bytes,
            max_waiting=settings.realtime_max_pending_subscribes,
        )
        broadcasts = BroadcastChannels(hub, feed, replayer, ChannelAccess(pool), settings)
        presence = PresenceTable()
        rooms = PresenceRooms(hub, presence, settings, broadcasts.members)
        transport: BusTransport = (
            RedisTransport(settings.realtime_redis_url, settings.realtime_bus_channel)
            if settings.realtime_redis_url
            else PostgresTransport(conninfo, settings.realtime_bus_channel, pool)
        )
        cluster = Cluster(
            transport,
            presence,
            timeout=settings.realtime_presence_timeout,
            on_broadcast=broadcasts.deliver_remote,
            on_presence=rooms.changed,
        )
        rooms.cluster = cluster
        broadcasts.attach(rooms, cluster)
        # Table channels first: after a token refresh they rejoin before anything awaits.
        filter_limits = FilterLimits(
            max_length=settings.realtime_max_filter_length,
            max_conditions=settings.realtime_max_filter_conditions,
            max_depth=settings.realtime_max_filter_depth,
        )
        channels = ChannelKinds(
            TableChannels(
                hub, feed, replayer, tables, rls, pool, filter_limits, settings.realtime_retry_after_seconds
            ),
            broadcasts,
        )
        capture: LogicalCapture | None = None
        slot_monitor: SlotMonitor | None = None
        if settings.realtime_capture == "logical":
            # This instance's feed is woken at once; the others by the batch's NOTIFY.
            capture = logical_capture(settings, conninfo, feed.wake)
            slot_monitor = SlotMonitor(
                pool,
                settings.realtime_slot,
                warning_bytes=settings.realtime_slot_lag_warning_bytes,
                interval=settings.realtime_slot_check_interval,
            )
        app.state.services = Services(
            settings=settings,
            pool=pool,
            hub=hub,
            verifier=TokenVerifier(
                settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
                settings.jwt_algorithms,
                require_exp=settings.jwt_require_exp,
                allowed_roles=frozenset(settings.realtime_allowed_roles),
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                leeway=settings.jwt_leeway_seconds,
                public_key=settings.jwt_public_key,
                jwks_url=settings.jwt_jwks_url,
                jwks_cache_seconds=settings.jwt_jwks_cache_seconds,
                jwks_cooldown_seconds=settings.jwt_jwks_cooldown_seconds,
                jwks_timeout=settings.jwt_jwks_timeout_seconds,
                cache_size=settings.realtime_token_cache_size,
                cache_seconds=settings.realtime_token_cache_seconds,
            ),
            limits=ConnectionLimiter(
                per_user=settings.realtime_max_connections_per_user,
                per_address=settings.realtime_max_connections_per_address,
                total=settings.realtime_max_connections,
            ),
            tables=tables,
            listener=listener,
            feed=feed,
            capture=capture,
            slot_monitor=slot_monitor,
            rls=rls,
            replayer=replayer,
            channels=channels,
            broadcasts=broadcasts,
            cluster=cluster,
            traffic=Traffic(),
        )
        # Read at scrape time (app.metrics).
        collector = RealtimeCollector(app.state.services)
        app.state.metrics_registry = metrics_registry(collector)
        pruner = ChangeLogPruner(
            pool,
            max_age=settings.realtime_retention_seconds,
            max_rows=settings.realtime_retention_max_rows,
            interval=settings.realtime_retention_interval,
        )
        tasks = [
            asyncio.create_task(listener.run(), name="listener"),
            asyncio.create_task(feed.run(), name="change-feed"),
            asyncio.create_task(hub.run_heartbeats(settings.realtime_heartbeat_interval), name="heartbeats"),
            asyncio.create_task(pruner.run(), name="retention"),
            asyncio.create_task(cluster.run(), name="cluster"),
            asyncio.create_task(app.state.services.loop_lag.run(), name="loop-lag"),
        ]
        if capture is not None and slot_monitor is not None:
            tasks.append(asyncio.create_task(capture.run(), name="logical-capture"))
            tasks.append(asyncio.create_task(slot_monitor.run(), name="slot-monitor"))
        log.info("service_started head_id=%d capture=%s", feed.last_id, settings.realtime_capture)
        try:
            yield
        finally:
            hub.close_all()
            await cluster.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await feed.close()
            await pool.close()
            if siblings is not None:
                await siblings.close()
            log.info("service_stopped")

    app = FastAPI(title="fluxbase-realtime", lifespan=lifespan)
    app.state.settings = settings
    app.state.siblings = siblings
    install_error_handlers(app)
    app.include_router(realtime.router)
    app.include_router(stats.router)
    app.include_router(broadcast.router)
    app.include_router(metrics.router)
    app.include_router(health.router)
    app.include_router(asyncapi.router)
    if settings.realtime_inspector:
        app.include_router(inspector_router())
    return app
