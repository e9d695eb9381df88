"""Settings from the environment (never from a developer's .env here: `_env_file=None`)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


def settings() -> Settings:
    return Settings(_env_file=None)


def test_defaults() -> None:
    s = settings()
    assert s.port == 8080
    assert s.host == "0.0.0.0"  # noqa: S104
    assert s.realtime_heartbeat_interval == 30
    assert s.realtime_notify_channel == "fluxbase_changes"
    assert s.log_level == "info"
    assert s.log_format == "text"
    assert s.jwt_secret is None
    assert s.jwt_algorithms == ["HS256"]
    assert s.jwt_require_exp is True
    assert s.database_url is None


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "PORT": "9000",
        "HOST": "127.0.0.1",
        "REALTIME_HEARTBEAT_INTERVAL": "0.25",
        "REALTIME_NOTIFY_CHANNEL": "My_Changes_2",
        "JWT_SECRET": "s3cret-value",
        "JWT_REQUIRE_EXP": "false",
        "DATABASE_URL": "postgresql://u@db:5432/app",
        "REALTIME_SEND_QUEUE_SIZE": "16",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = settings()
    assert s.port == 9000
    assert s.host == "127.0.0.1"
    assert s.realtime_heartbeat_interval == 0.25
    assert s.realtime_notify_channel == "My_Changes_2"
    assert s.jwt_secret is not None and s.jwt_secret.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(s)
    assert s.jwt_require_exp is False
    assert s.database_url == "postgresql://u@db:5432/app"
    assert s.realtime_send_queue_size == 16


def test_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    assert settings().log_format == "json"


@pytest.mark.parametrize("value", ["DEBUG", "Warning", "error", "CRITICAL"])
def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LOG_LEVEL", value)
    assert settings().log_level == value.lower()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("HS384", ["HS384"]),
        ("HS256,HS384", ["HS256", "HS384"]),
        (" HS256 , HS512 ,", ["HS256", "HS512"]),
        ('["HS256", "HS384"]', ["HS256", "HS384"]),
    ],
)
def test_jwt_algorithms(monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]) -> None:
    monkeypatch.setenv("JWT_ALGORITHMS", value)
    assert settings().jwt_algorithms == expected


@pytest.mark.parametrize("name", ["_x", "a", "A1_b", "a" * 63])
def test_valid_notify_channel(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("REALTIME_NOTIFY_CHANNEL", name)
    assert settings().realtime_notify_channel == name


@pytest.mark.parametrize(
    "name",
    ["bad-name", "1abc", "a" * 64, "", "has space", "semi;colon", 'quote"d', "naïve", "fluxbase_changes\n"],
)
def test_invalid_notify_channel(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("REALTIME_NOTIFY_CHANNEL", name)
    with pytest.raises(ValidationError, match="realtime_notify_channel"):
        settings()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("LOG_LEVEL", "verbose"),
        ("LOG_FORMAT", "logfmt"),
        ("PORT", "70000"),
        ("PORT", "http"),
        ("REALTIME_HEARTBEAT_INTERVAL", "0"),
        ("REALTIME_HEARTBEAT_INTERVAL", "-1"),
        ("REALTIME_SEND_QUEUE_SIZE", "0"),
    ],
)
def test_invalid_values(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=key.lower()):
        settings()


def test_front_door_defaults() -> None:
    s = settings()
    assert (s.jwt_audience, s.jwt_issuer, s.jwt_leeway_seconds) == ([], None, 0)
    assert (s.jwt_public_key, s.jwt_jwks_url) == (None, None)
    assert s.realtime_max_channels_per_connection == 100
    assert s.realtime_max_messages_per_second == 50
    assert s.realtime_max_connections_per_user == 100
    assert s.realtime_max_connections_per_address == 1000
    assert s.realtime_allowed_origins == []


def test_front_door_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "JWT_AUDIENCE": "realtime, api",
        "JWT_ISSUER": "https://auth.example",
        "JWT_LEEWAY_SECONDS": "2.5",
        "JWT_JWKS_URL": "https://auth.example/jwks.json",
        "REALTIME_MAX_MESSAGES_PER_SECOND": "0.5",
        "REALTIME_ALLOWED_ORIGINS": '["HTTPS://App.Example/", "http://localhost:3000"]',
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = settings()
    assert s.jwt_audience == ["realtime", "api"]
    assert s.jwt_issuer == "https://auth.example"
    assert s.jwt_leeway_seconds == 2.5
    assert s.jwt_jwks_url == "https://auth.example/jwks.json"
    assert s.realtime_max_messages_per_second == 0.5
    assert s.realtime_allowed_origins == ["https://app.example", "http://localhost:3000"]


def test_empty_front_door_strings_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("JWT_ISSUER", "JWT_PUBLIC_KEY", "JWT_JWKS_URL", "JWT_AUDIENCE", "REALTIME_ALLOWED_ORIGINS"):
        monkeypatch.setenv(key, "")
    s = settings()
    assert (s.jwt_issuer, s.jwt_public_key, s.jwt_jwks_url) == (None, None, None)
    assert (s.jwt_audience, s.realtime_allowed_origins) == ([], [])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("REALTIME_MAX_CHANNELS_PER_CONNECTION", "0"),
        ("REALTIME_MAX_MESSAGES_PER_SECOND", "0"),
        ("REALTIME_MAX_CONNECTIONS_PER_USER", "0"),
        ("REALTIME_MAX_CONNECTIONS_PER_ADDRESS", "-1"),
        ("JWT_LEEWAY_SECONDS", "-1"),
        ("JWT_LEEWAY_SECONDS", "3600"),
        ("JWT_JWKS_CACHE_SECONDS", "0"),
    ],
)
def test_invalid_front_door_values(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=key.lower()):
        settings()


def test_capture_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings()
    assert (s.realtime_capture, s.realtime_slot, s.realtime_publication) == (
        "trigger",
        "fluxbase_realtime",
        "fluxbase_realtime",
    )
    monkeypatch.setenv("REALTIME_CAPTURE", "logical")
    monkeypatch.setenv("REALTIME_SLOT", "slot_2")
    assert (settings().realtime_capture, settings().realtime_slot) == ("logical", "slot_2")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("REALTIME_CAPTURE", "wal"),
        ("REALTIME_SLOT", "Upper"),
        ("REALTIME_SLOT", "a-b"),
        ("REALTIME_SLOT", "x" * 64),
        ("REALTIME_PUBLICATION", "p'; DROP TABLE x; --"),
        ("REALTIME_LOGICAL_BATCH", "0"),
        ("REALTIME_CONSUMER_TAKEOVER_INTERVAL", "0"),
    ],
)
def test_invalid_capture_values(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=key.lower()):
        settings()


def test_the_listen_backlog_reaches_uvicorn_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.main import create_app
    from app.server import uvicorn_config

    monkeypatch.setenv("REALTIME_LISTEN_BACKLOG", "8192")
    s = Settings(_env_file=None, database_url="postgresql://postgres@127.0.0.1:5432/postgres")
    config = uvicorn_config(create_app(s), s, host="127.0.0.1", port=0)
    assert config.backlog == 8192
    monkeypatch.delenv("REALTIME_LISTEN_BACKLOG")
    assert settings().realtime_listen_backlog == 4096
    for bad in ("0", "70000"):
        monkeypatch.setenv("REALTIME_LISTEN_BACKLOG", bad)
        with pytest.raises(ValidationError, match="realtime_listen_backlog"):
            settings()
