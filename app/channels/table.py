"""`table:{schema}.{table}` channels: subscribing (with `since`), unsubscribing, and rejoining after a
token refresh, each without a gap or a duplicate at the seam between replayed and live changes."""

from __future__ import annotations

import logging

from psycopg_pool import AsyncConnectionPool

from app import protocol
from app.channels.replays import start_replay, stop_replay
from app.channels.table_view import TableColumns, view_or_refusal
from app.filters.parse import FilterLimits
from app.protocol import TableChannel
from app.services.changes import ChangeFeed
from app.services.coalesce import Busy
from app.services.hub import Hub
from app.services.replay import Replayer
from app.services.rls import RowSecurity, TableAccess
from app.services.subscribers import Subscriber
from app.services.tables import TableDirectory, TableStatus
from app.services.views import PLAIN, SUBSCRIPTION_SEPARATOR, channel_of, subscription_key

log = logging.getLogger(__name__)

SUBSCRIBE_FAILED = "subscribe failed (the database is unavailable): try again"
# Over REALTIME_MAX_PENDING_SUBSCRIBES: refused at once rather than left to time out.
BUSY = "subscribe failed (too many subscribes are waiting for the database): try again after a backoff"


class TableChannels:
    """The table channel kind (app.channels.kind.ChannelKind)."""

    prefix = protocol.TABLE_PREFIX

    def __init__(
        self,
        hub: Hub,
        feed: ChangeFeed,
        replayer: Replayer,
        tables: TableDirectory,
        rls: RowSecurity,
        pool: AsyncConnectionPool,
        filter_limits: FilterLimits,
        retry_after: int = 1,
    ) -> None:
        """`retry_after`: the seconds a subscribe refused for load is told to wait (its `retry_after`)."""
        self._retry_after = retry_after
        self._pool = pool
        self._filter_limits = filter_limits
        self._columns = TableColumns()
        self._hub = hub
        self._feed = feed
        self._replayer = replayer
        self._tables = tables
        self._rls = rls

    async def subscribe(self, subscriber: Subscriber, request: protocol.ChannelRequest) -> None:
        hub = self._hub
        channel = request.channel
        assert isinstance(channel, TableChannel)
        name = channel.name
        options = request.options
        key = subscription_key(name, options.subscription)
        refusal, access = await self._refusal(channel, request, subscriber)
        if refusal is not None:
            hub.offer_to([subscriber], refusal)
            return
        try:
            view = await view_or_refusal(
                self._pool, self._columns, channel, options, subscriber.audience, access, self._filter_limits
            )
        except Exception:
            log.exception("subscribe_failed channel=%s", name)
            view = SUBSCRIBE_FAILED
        if isinstance(view, str):
            hub.offer_to(
                [subscriber],
                protocol.encode_error(view, ref=request.ref, channel=name, subscription=options.subscription),
            )
            return
        ack = protocol.encode_ack(name, request.ref, options.subscription)
        unchanged = subscriber.views.get(key, PLAIN) == view
        if request.since is None and unchanged and hub.is_live(subscriber, key):
            # Subscribing twice is harmless.
            hub.reply(subscriber, ack)
            return
        if request.since is None:
            # "Now": every change committed before this pass is numbered at or below it. Taken before the
            # ack leaves, so that whatever the client commits after reading the ack is numbered after it;
            # and before anything changes, so that a failure leaves the subscription as it was.
            try:
                now = await self._feed.sequence()
            except Busy:
                hub.offer_to([subscriber], self._busy(request))
                return
            except Exception:
                log.exception("subscribe_failed channel=%s", name)
                hub.offer_to(
                    [subscriber],
                    protocol.encode_error(
                        SUBSCRIBE_FAILED, ref=request.ref, channel=name, subscription=options.subscription
                    ),
                )
                return
        stop_replay(subscriber, key)
        # Out of live delivery until the subscription has caught up with the feed, or a change could arrive
        # twice; the ack goes first, then anything replayed, then live changes. A subscribe that changes
        # the subscription's options starts it afresh from here.
        hub.unsubscribe(subscriber, key)
        subscriber.channels.add(key)
        if not view.plain:
            subscriber.views[key] = view
        if request.since is None:
            # Where it starts: a client cut off before any change reached it resumes from here.
            ack = protocol.encode_ack(name, request.ref, options.subscription, since=now)
        hub.reply(subscriber, ack)
        if request.since is not None:
            start_replay(
                subscriber, key, self._replayer.replay(subscriber, channel, request.since, key), self._abandon
            )
            return
        # Exactly the changes numbered after "now", not those committed before that a lagging feed has yet
        # to publish. Usually the feed is there already and this returns without waiting.
        try:
            await self._replayer.join(subscriber, channel, now, key)
        except Exception:
            log.exception("subscribe_failed channel=%s", name)
            self._abandon(subscriber, key, SUBSCRIBE_FAILED)

    async def unsubscribe(self, subscriber: Subscriber, request: protocol.ChannelRequest) -> None:
        name = request.channel.name
        subscription = request.options.subscription
        key = subscription_key(name, subscription)
        stop_replay(subscriber, key)
        if self._hub.unsubscribe(subscriber, key):
            self._hub.offer_to([subscriber], protocol.encode_ack(name, request.ref, subscription))
        else:
            which = f" (subscription {subscription!r})" if subscription is not None else ""
            self._hub.offer_to(
                [subscriber],
                protocol.encode_error(
                    f"not subscribed to {name}{which}",
                    ref=request.ref,
                    channel=name,
                    subscription=subscription,
                ),
            )

    async def handle(self, subscriber: Subscriber, request: protocol.Request) -> None:
        # The parser gives broadcast, track and untrack only broadcast channels.
        raise TypeError(f"table channels take no {type(request).__name__}")

    async def principal_changed(self, subscriber: Subscriber, left: list[str]) -> None:
        """Channels the subscriber left live delivery on when its principal changed: everything up to the
        feed's position now reached it live, so each rejoins from exactly there (replaying what the feed
        publishes meanwhile), with no await between the change and reading the position."""
        cursor = self._feed.last_id
        for key in left:
            stop_replay(subscriber, key)
            channel = protocol.parse_channel(channel_of(key))
            assert isinstance(channel, TableChannel)
            start_replay(
                subscriber, key, self._replayer.join(subscriber, channel, cursor, key), self._abandon
            )

    def disconnected(self, subscriber: Subscriber) -> None:
        for name in [n for n in subscriber.replays if n.startswith(self.prefix)]:
            stop_replay(subscriber, name)

    def _abandon(self, subscriber: Subscriber, key: str, reason: str, busy: bool = False) -> None:
        """Neither replaying nor live: drop the subscription and say so, so that the client subscribes
        again (`busy`: refused for load, after retry_after seconds)."""
        self._hub.unsubscribe(subscriber, key)
        channel, _, subscription = key.partition(SUBSCRIPTION_SEPARATOR)
        self._hub.offer_to(
            [subscriber],
            protocol.encode_error(
                reason,
                channel=channel,
                code="subscribe_failed",
                subscription=subscription or None,
                retry_after=self._retry_after if busy else None,
            ),
        )

    def _busy(self, request: protocol.ChannelRequest) -> str:
        """The refusal of a subscribe over REALTIME_MAX_PENDING_SUBSCRIBES: subscribe_failed, with how long
        to wait before subscribing again (the SDKs add their jitter to it)."""
        return protocol.encode_error(
            BUSY,
            ref=request.ref,
            channel=request.channel.name,
            code="subscribe_failed",
            subscription=request.options.subscription,
            retry_after=self._retry_after,
        )

    async def _refusal(
        self, channel: TableChannel, request: protocol.ChannelRequest, subscriber: Subscriber
    ) -> tuple[str | None, TableAccess | None]:
        """The error that refuses this subscribe, or None; and what the subscriber's role may see."""
        name = channel.name
        audience = subscriber.audience
        try:
            # One query for every subscribe asking meanwhile (app.services.tables): a connect storm of
            # 10,000 clients on one table costs a few dozen queries, not 20,000.
            status, access = await self._tables.check(channel, audience.role)
            partition = status is TableStatus.PARTITION
            through = await self._tables.captured_through(channel) if partition else None
        except Busy:
            return self._busy(request), None
        except Exception:
            log.exception("table_status_failed")
            return protocol.encode_error(
                "could not check the table: the database is unavailable, try again",
                ref=request.ref,
                channel=name,
            ), None
        table = f"{channel.schema}.{channel.table}"
        if status is TableStatus.MISSING:
            return protocol.encode_error(f"table {table} does not exist", ref=request.ref, channel=name), None
        if status is TableStatus.PARTITION:
            return protocol.encode_error(
                f"table {table} is a partition of a realtime partitioned table, whose channel reports its "
                f"changes: subscribe to {through or 'the partitioned table'}",
                ref=request.ref,
                channel=name,
            ), None
        if status is TableStatus.DISABLED:
            return protocol.encode_error(
                f"realtime is not enabled on table {table}: run SELECT enable_realtime(schema, table)",
                ref=request.ref,
                channel=name,
            ), None
        if access is None or not access.rls_enabled or access.bypass or audience.bypasses_rls:
            return None, access
        role = audience.role
        if not access.role_exists:
            reason = f"role {role!r} does not exist in the database"
        elif not access.allowed_columns:
            reason = f"role {role!r} may not SELECT table {table}"
        elif access.policy_count == 0:
            reason = (
                f"table {table} has row-level security and no SELECT policy for role {role!r}: "
                "it can see no row"
            )
        else:
            return None, access
        return protocol.encode_error(reason, ref=request.ref, channel=name), access
