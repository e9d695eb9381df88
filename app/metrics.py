"""GET /metrics: the service's counters in Prometheus' text format.

Nothing on the delivery path touches prometheus_client. The services keep plain ints (and
app.services.histogram's lock-free histograms) as they work; `RealtimeCollector` reads them when Prometheus
scrapes and turns them into metric families. Each application has a registry of its own (tests run several
in one process), holding this collector and the process collector (CPU, memory, open files).

The bus between instances (app.services.cluster) is read the same way: its transport's connection and
the counters the cluster keeps. In logical mode the slot's lag is read from what the slot monitor last saw
(it checks every REALTIME_SLOT_CHECK_INTERVAL; a scrape never queries the database) and from the consumer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from app.services.container import Services
from app.services.histogram import Histogram

PREFIX = "fluxbase_realtime_"
CHANNEL_KINDS = ("table", "broadcast")
# Types every scrape reports (at 0 until seen), so that rate() has a series from the start.
RECEIVED_TYPES = ("subscribe", "unsubscribe", "access_token", "broadcast", "track", "untrack")
SENT_TYPES = ("ack", "error", "heartbeat", "broadcast")
REFUSAL_REASONS = ("origin", "token", "user_limit", "address_limit", "capacity", "overloaded")


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _labelled(
    family: CounterMetricFamily | GaugeMetricFamily, counts: Mapping[str, float], always: Iterable[str]
) -> CounterMetricFamily | GaugeMetricFamily:
    for key in sorted({*always, *counts}):
        family.add_metric([key], counts.get(key, 0))
    return family


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        PREFIX + name, documentation, buckets=histogram.cumulative(), sum_value=histogram.sum
    )


class RealtimeCollector(Collector):
    """Reads the services' counters at scrape time (on the event loop, like everything that updates them)."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        services = self._services
        hub, feed, rls, replayer = services.hub, services.feed, services.rls, services.replayer
        yield _gauge("connections", "Open WebSocket connections.", hub.connection_count)
        yield _counter(
            "connections_opened", "WebSocket connections accepted and served.", hub.connections_opened
        )
        refused = {
            **services.traffic.refused,
            "user_limit": services.limits.refused_per_user,
            "address_limit": services.limits.refused_per_address,
            "capacity": services.limits.refused_capacity,
        }
        yield _labelled(
            CounterMetricFamily(
                PREFIX + "connections_rejected",
                "Connections refused at connect, by reason (capacity: HTTP 503 before the upgrade; the "
                "others: an error, then close 1008).",
                labels=["reason"],
            ),
            refused,
            REFUSAL_REASONS,
        )
        by_kind = hub.subscriptions_by_kind()
        yield _labelled(
            GaugeMetricFamily(
                PREFIX + "subscriptions",
                "Live subscriptions (a connection on a channel), by channel kind.",
                labels=["kind"],
            ),
            {kind: subscriptions for kind, (_, subscriptions) in by_kind.items()},
            CHANNEL_KINDS,
        )
        yield _labelled(
            GaugeMetricFamily(
                PREFIX + "channels", "Channels with at least one live subscriber, by kind.", labels=["kind"]
            ),
            {kind: channels for kind, (channels, _) in by_kind.items()},
            CHANNEL_KINDS,
        )
        yield _labelled(
            CounterMetricFamily(
                PREFIX + "messages_received",
                "Client messages, by type; binary, too_large, invalid and rate_limited were not requests.",
                labels=["type"],
            ),
            services.traffic.received,
            RECEIVED_TYPES,
        )
        sent = dict(hub.sent)
        sent["broadcast"] = sent.get("broadcast", 0) + hub.change_deliveries
        yield _labelled(
            CounterMetricFamily(
                PREFIX + "messages_sent",
                "Frames queued or written to clients, by type (broadcast: changes and messages, live and "
                "replayed).",
                labels=["type"],
            ),
            sent,
            SENT_TYPES,
        )
        yield _counter(
            "deliveries", "Live frames (changes, broadcasts, presence) handed to subscribers, one each.",
            hub.deliveries,
        )  # fmt: skip
        yield _counter("delivered_bytes", "Bytes of those frames, uncompressed.", hub.delivered_bytes)
        queued, fullest = hub.queued_frames()
        yield _gauge("send_queue_frames", "Frames waiting in send queues, all connections.", queued)
        yield _gauge("send_queue_max_frames", "Frames waiting in the fullest send queue.", fullest)
        yield _gauge("send_queue_capacity_frames", "Capacity of one send queue.", hub.send_queue_size)
        yield _counter(
            "slow_consumer_closes", "Clients closed (1013) because their send queue stayed full.",
            hub.slow_consumer_disconnects,
        )  # fmt: skip
        yield _histogram(
            "read_to_send_seconds",
            "Seconds from the feed reading a change from the log to handing it to subscribers' sockets or "
            "queues (row-level security checks and waits for full queues included). Measured from the read, "
            "not from COMMIT: the feed does not read the log's commit time; commit to read adds the NOTIFY "
            "and one pass (see fluxbase_realtime_feed_pass_seconds).",
            feed.read_to_publish_seconds,
        )
        yield _histogram(
            "commit_to_send_seconds",
            "Seconds from a transaction's COMMIT (the database's commit timestamp) to the feed handing its "
            "first change to subscribers' sockets or queues, once per commit. Trigger mode: observed only "
            "where PostgreSQL records commit timestamps (track_commit_timestamp = on); logical mode: from "
            "pgoutput's commit time, once per source transaction. Across hosts it includes the difference "
            "between the database's clock and this host's (negatives count as 0).",
            feed.commit_to_publish_seconds,
        )
        yield _histogram(
            "feed_pass_seconds",
            "Seconds a feed wake-up's statement takes (a sequencer pass and the first read of the log).",
            feed.pass_seconds,
        )
        yield _histogram(
            "event_loop_lag_seconds",
            "Seconds the process's event loop ran its timers late, sampled every 0.25 s: how long anything "
            "waited for the loop to come round (seconds: the process is short of CPU; acks, heartbeats and "
            "the bus are that late too).",
            self._services.loop_lag.histogram,
        )
        yield _gauge(
            "event_loop_lag_max_seconds",
            "The largest lateness of the event loop's timers since the process started.",
            self._services.loop_lag.worst,
        )
        yield _gauge(
            "feed_lag_changes",
            "Changes numbered in the log (as of the feed's latest pass) not yet delivered by this instance.",
            max(0, feed.head_id - feed.last_id),
        )
        yield _gauge("feed_last_delivered_id", "Id of the newest change delivered.", feed.last_id)
        yield _counter("sequencer_passes", "Sequencer passes run by this instance.", feed.passes)
        checks, passes = services.tables.checks, feed.shared_passes
        yield _counter("subscribe_checks", "Table checks subscribes asked for.", checks.asked)
        yield _counter(
            "subscribe_check_queries", "Queries that answered them (one per batch).", checks.batches
        )
        yield _counter("subscribe_passes_asked", "Sequencer passes subscribes asked for.", passes.asked)
        yield _counter(
            "subscribe_passes_run", "Sequencer passes that answered them (one per batch).", passes.batches
        )
        yield _counter(
            "subscribes_refused_busy",
            "Subscribes refused at once (subscribe_failed) over REALTIME_MAX_PENDING_SUBSCRIBES.",
            checks.refused + passes.refused,
        )
        yield _counter("feed_errors", "Feed wake-ups that failed (retried with backoff).", feed.failures)
        yield _counter("rls_checks", "Row-level security checks issued to the database.", rls.checks_issued)
        yield _counter("rls_changes_checked", "Changes those checks covered.", rls.changes_checked)
        yield _counter("replays", "Subscribes with `since` (replays started).", replayer.replays)
        yield _counter("replay_gaps", "replay_gap errors sent.", replayer.replay_gaps)
        yield _counter("replayed_changes", "Changes sent by replays.", replayer.replayed_changes)
        yield _counter("replay_reads_asked", "Reads of the log replays asked for.", replayer.reads.asked)
        yield _counter(
            "replay_reads_run",
            "Reads of the log that answered them (replays of one range at once share one).",
            replayer.reads.asked - replayer.reads.shared,
        )
        listener = services.listener
        yield _gauge("listener_connected", "1 while the LISTEN connection is up.", int(listener.connected))
        yield _counter(
            "listener_reconnects", "Times the LISTEN connection was re-established after losing it.",
            max(0, listener.connects - 1),
        )  # fmt: skip
        yield from self._bus()
        yield from self._slot()

    def _slot(self) -> Iterator[Metric]:
        """Logical mode only: a gauge appears once its value is known (absent, not 0, while unknown)."""
        capture, monitor = self._services.capture, self._services.slot_monitor
        if capture is None or monitor is None:
            return
        state = monitor.last
        if state is not None and state.lag_bytes is not None:
            yield _gauge(
                "capture_slot_lag_bytes",
                "WAL the replication slot holds that the consumer has not confirmed, as of the slot "
                "monitor's latest check (every REALTIME_SLOT_CHECK_INTERVAL; any instance can tell).",
                state.lag_bytes,
            )
        seconds = capture.lag_seconds
        if seconds is not None:
            yield _gauge(
                "capture_slot_lag_seconds",
                "Age of the oldest transaction the consumer received but has not confirmed (0 when none; "
                "reported by the consuming instance only).",
                seconds,
            )

    def _bus(self) -> Iterator[Metric]:
        cluster = self._services.cluster
        labels = [cluster.transport]
        up = GaugeMetricFamily(
            PREFIX + "bus_up", "1 while the bus between instances is connected.", labels=["bus"]
        )
        up.add_metric(labels, int(cluster.healthy))
        yield up
        peers = GaugeMetricFamily(PREFIX + "bus_peers", "Other instances heard on the bus.", labels=["bus"])
        peers.add_metric(labels, cluster.peers)
        yield peers
        for name, documentation, count in (
            ("bus_messages_received", "Messages received from other instances.", cluster.received),
            (
                "bus_messages_dropped",
                "Messages never handed to the bus (it was down or backed up).",
                cluster.dropped,
            ),
        ):
            family = CounterMetricFamily(PREFIX + name, documentation, labels=["bus"])
            family.add_metric(labels, count)
            yield family
        yield _counter(
            "broadcast_messages",
            "Messages sent to broadcast channels by this instance's clients.",
            self._services.broadcasts.sent,
        )


def metrics_registry(collector: RealtimeCollector) -> CollectorRegistry:
    """A registry of the application's own: the service's metrics and the process's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry
