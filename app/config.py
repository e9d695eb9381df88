"""Service configuration: the only place environment variables are read."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# PostgreSQL identifiers are at most 63 bytes; LISTEN takes an identifier.
_CHANNEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_REPLICATION_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class Settings(BaseSettings):
    """Everything the service can be told from its environment (or a `.env` file)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL to capture changes from; unset: an embedded server (see embedded_home).",
    )
    jwt_secret: SecretStr | None = Field(
        default=None, description="HS256 secret; when unset every token is rejected."
    )
    jwt_require_exp: bool = Field(default=True, description="Refuse tokens without an exp claim.")
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(
        default=["HS256"], description="Accepted JWT algorithms."
    )
    realtime_allowed_roles: Annotated[list[str], NoDecode] = Field(
        default=["anon", "authenticated", "service_role"],
        description="Database roles a token's role claim may name; anything else is refused at connect.",
    )
    host: str = "0.0.0.0"  # noqa: S104 - a service container listens on every interface by design
    port: int = Field(default=8080, ge=0, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["text", "json"] = Field(
        default="text", description="text: one key=value line per event; json: one JSON object per line."
    )

    realtime_heartbeat_interval: float = Field(default=30.0, gt=0)
    realtime_notify_channel: str = "fluxbase_changes"
    realtime_send_queue_size: int = Field(
        default=1024, ge=1, description="Messages buffered per connection before it is closed as too slow."
    )
    realtime_slow_client_timeout: float = Field(
        default=2.0,
        gt=0,
        description="How long a burst may wait for a full queue to drain before that client is closed.",
    )
    realtime_retention_seconds: float = Field(
        default=86400, gt=0, description="Changes older than this are pruned from the change log."
    )
    realtime_retention_max_rows: int | None = Field(
        default=1_000_000,
        ge=1,
        description="At most this many newest changes are kept (unset: no size limit).",
    )
    realtime_retention_interval: float = Field(
        default=60, gt=0, description="Seconds between pruning runs of the change log."
    )
    realtime_max_message_bytes: int = Field(default=64 * 1024, ge=256)
    realtime_ws_compression: bool = Field(
        default=False, description="permessage-deflate; costs CPU and memory per connection."
    )
    realtime_pool_size: int = Field(default=8, ge=2)
    realtime_fetch_batch: int = Field(default=500, ge=1, description="Changes read from the log per query.")
    realtime_fetch_batch_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Approximate byte budget of one read from the log."
    )
    realtime_busy_pass_interval: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Least seconds between sequencer passes while changes keep arriving (0: no pacing).",
    )
    realtime_poll_grace: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="Seconds writers may skip NOTIFY after a polling pass found changes (0: always notify).",
    )
    realtime_idle_poll_interval: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="Most seconds between sequencer passes: the longest a change can wait to be read.",
    )

    # Capture: triggers (default) or logical decoding of the WAL (docs/design.md: Capture modes).
    realtime_capture: Literal["trigger", "logical"] = Field(
        default="trigger",
        description="How changes are captured: 'trigger' or 'logical' (needs wal_level=logical).",
    )
    realtime_publication: str = Field(
        default="fluxbase_realtime", description="Logical mode: the publication realtime tables are added to."
    )
    realtime_slot: str = Field(
        default="fluxbase_realtime", description="Logical mode: the replication slot the consumer streams."
    )
    realtime_logical_batch: int = Field(
        default=1000,
        ge=1,
        description="Logical mode: most changes written to the change log per transaction.",
    )
    realtime_logical_batch_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Logical mode: about the most record bytes per write."
    )
    realtime_consumer_takeover_interval: float = Field(
        default=1.0, gt=0, le=60, description="Logical mode: seconds between attempts to become the consumer."
    )
    realtime_slot_lag_warning_bytes: int = Field(
        default=1024**3,
        ge=1,
        description="Logical mode: log a warning when the slot holds more WAL than this.",
    )
    realtime_slot_drain_timeout: float = Field(
        default=60.0, gt=0, description="Back in trigger mode: seconds to drain the slot before giving up."
    )
    realtime_slot_check_interval: float = Field(
        default=10.0, gt=0, description="Logical mode: seconds between checks of the slot's lag and health."
    )

    # The front door: token checks beyond the secret, and per-connection limits.
    jwt_audience: Annotated[list[str], NoDecode] = Field(
        default=[], description="Accepted 'aud' values; when set, tokens must carry one of them."
    )
    jwt_issuer: str | None = Field(default=None, description="When set, tokens must carry this 'iss'.")
    jwt_leeway_seconds: float = Field(
        default=0, ge=0, le=300, description="Clock skew allowed when checking exp, nbf and iat."
    )
    jwt_public_key: str | None = Field(
        default=None, description="PEM public key (or certificate) for RS*/PS*/ES*/EdDSA tokens."
    )
    jwt_jwks_url: str | None = Field(
        default=None, description="JWKS endpoint (http or https) for RS*/PS*/ES*/EdDSA tokens with a kid."
    )
    jwt_jwks_cache_seconds: float = Field(default=300, gt=0, description="How long a fetched JWKS is used.")
    jwt_jwks_cooldown_seconds: float = Field(
        default=10, ge=0, description="Least time between refetches of the JWKS for an unknown kid."
    )
    jwt_jwks_timeout_seconds: float = Field(default=5, gt=0, description="HTTP timeout of a JWKS fetch.")
    realtime_max_channels_per_connection: int = Field(default=100, ge=1)
    realtime_max_filter_length: int = Field(
        default=1024, ge=16, description="Characters in one subscription's row filter."
    )
    realtime_max_filter_conditions: int = Field(
        default=32, ge=1, description="Conditions (column op value) in one subscription's row filter."
    )
    realtime_max_filter_depth: int = Field(
        default=8, ge=1, le=64, description="Levels of and/or nesting in one subscription's row filter."
    )
    realtime_max_messages_per_second: float = Field(
        default=50, gt=0, description="Client messages per second per connection (bursts of as many)."
    )
    realtime_max_connections: int = Field(
        default=100_000,
        ge=1,
        description="Connections one instance serves at once (those being admitted included); past it, "
        "new ones are refused before the upgrade with HTTP 503 and Retry-After.",
    )
    realtime_max_loop_lag_seconds: float = Field(
        default=0,
        ge=0,
        le=60,
        description="How late the event loop may run before new connections are refused before the upgrade "
        "with HTTP 503 and Retry-After, so that the connections it has stay on time; 0 (the default): never "
        "refused for it, since a reconnect storm then takes longer (docs/benchmarks.md).",
    )
    realtime_listen_backlog: int = Field(
        default=4096,
        ge=1,
        le=65535,
        description="Connections the kernel queues before the service accepts them (the listen backlog; "
        "the kernel caps it at net.core.somaxconn).",
    )
    realtime_workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Worker processes sharing the listening port (SO_REUSEPORT); 1: one process, no "
        "supervisor. Each worker is one more instance to the database (app.supervisor).",
    )
    realtime_worker_timeout: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="With workers: seconds the worker answering /metrics or the stats waits for each "
        "sibling's figures before reporting it missing.",
    )
    realtime_max_pending_subscribes: int = Field(
        default=10_000,
        ge=1,
        description="Subscribes waiting for their database check at once; past it, a subscribe is refused "
        "at once with subscribe_failed (clients retry with backoff) instead of queueing.",
    )
    realtime_retry_after_seconds: int = Field(
        default=1,
        ge=0,
        le=3600,
        description="What a client refused for load is told to wait before retrying: the Retry-After of the "
        "HTTP 503 past REALTIME_MAX_CONNECTIONS (past REALTIME_MAX_LOOP_LAG_SECONDS, at least the loop's "
        "lag), the retry_after of subscribe_failed past REALTIME_MAX_PENDING_SUBSCRIBES (the SDKs add their "
        "jitter on top).",
    )
    realtime_token_cache_size: int = Field(
        default=100_000,
        ge=0,
        description="Verified tokens remembered (by hash) so reconnects skip the check; 0: off.",
    )
    realtime_token_cache_seconds: float = Field(
        default=60,
        ge=0,
        description="Most seconds a verified token is remembered (never past its exp): how long a token "
        "signed with a key that left the JWKS may still be accepted.",
    )
    realtime_max_connections_per_user: int = Field(default=100, ge=1, description="By the token's sub.")
    realtime_max_connections_per_address: int = Field(default=1000, ge=1, description="By client IP.")
    realtime_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default=[], description="Origins browsers may connect from; empty: any origin."
    )

    # Broadcast channels and presence, and the bus between instances.
    realtime_redis_url: str | None = Field(
        default=None,
        description="Redis for the bus between instances (redis://...); unset: through PostgreSQL.",
    )
    realtime_bus_channel: str = Field(
        default="fluxbase_bus",
        description="The bus's NOTIFY channel (or Redis PUB/SUB channel); all instances must agree.",
    )
    realtime_presence_timeout: float = Field(
        default=15,
        ge=0.3,
        le=300,
        description="Seconds after which an instance that is no longer heard from has its presences leave.",
    )
    realtime_max_broadcast_payload_bytes: int = Field(
        default=32 * 1024, ge=1, description="Largest payload of a client's broadcast (JSON bytes)."
    )
    realtime_broadcast_flush_interval: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Least seconds between writes of clients' broadcasts to a connection while they keep "
        "arriving (0: every event-loop turn).",
    )
    realtime_max_presence_state_bytes: int = Field(
        default=4096, ge=2, description="Largest presence state a connection may track (JSON bytes)."
    )
    realtime_max_presences_per_channel: int = Field(
        default=10_000, ge=1, description="Presences on one broadcast channel, across every instance."
    )
    realtime_max_presence_updates_per_second: float = Field(
        default=5, gt=0, description="track/untrack messages per second per connection and channel."
    )
    realtime_max_http_broadcast_bytes: int = Field(
        default=1024 * 1024, ge=256, description="Largest request body of POST /api/realtime/broadcast."
    )
    realtime_inspector: bool = Field(
        default=False,
        description="Serve the inspector (/inspector) and its service_role-only API; off, neither exists.",
    )
    realtime_inspector_max_channels: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Most channels the inspector's API lists (the busiest first); the rest are only counted.",
    )

    @field_validator("realtime_notify_channel", "realtime_bus_channel")
    @classmethod
    def _channel_is_identifier(cls, value: str) -> str:
        if not _CHANNEL_NAME.fullmatch(value):
            raise ValueError("must be a plain identifier: letters, digits and underscores, at most 63")
        return value

    @field_validator("realtime_publication", "realtime_slot")
    @classmethod
    def _replication_name(cls, value: str) -> str:
        # Slot names allow only these; the publication is held to the same rule.
        if not _REPLICATION_NAME.fullmatch(value):
            raise ValueError(
                "must be lowercase letters, digits and underscores, at most 63, not starting with a digit"
            )
        return value

    @field_validator(
        "jwt_algorithms", "realtime_allowed_roles", "jwt_audience", "realtime_allowed_origins", mode="before"
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        # NoDecode: the environment gives a string, either a JSON list or comma-separated names.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("realtime_allowed_origins")
    @classmethod
    def _normalize_origins(cls, value: list[str]) -> list[str]:
        # Browsers send `scheme://host[:port]`; scheme and host are case-insensitive.
        return [origin.rstrip("/").lower() for origin in value]

    @field_validator("jwt_issuer", "jwt_public_key", "jwt_jwks_url", "realtime_redis_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value
