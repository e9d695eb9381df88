"""The inspector's data (app.inspector.snapshot) from a hub, without sockets, and its switch."""

from __future__ import annotations

from types import MappingProxyType

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.config import Settings
from app.inspector.snapshot import inspector_snapshot
from app.main import create_app
from app.services.auth import ANONYMOUS, Principal
from app.services.hub import Hub

SECRET_CLAIM = "a-claim-the-inspector-must-not-show"


def principal(sub: str, role: str) -> Principal:
    claims = MappingProxyType({"sub": sub, "role": role, "email": SECRET_CLAIM})
    return Principal(user_id=sub, claims=claims, authenticated=True, role=role)


def test_counts_by_role_and_kind_and_the_busiest_channels_first() -> None:
    hub = Hub(send_queue_size=8, slow_client_timeout=0.1)
    service = hub.connect(principal("ops", "service_role"), client="10.0.0.1:1")
    users = [hub.connect(principal(f"u{i}", "authenticated"), client=f"10.0.0.2:{i}") for i in range(3)]
    anonymous = hub.connect(ANONYMOUS)
    for subscriber in users:
        hub.subscribe(subscriber, "table:public.orders")
    hub.subscribe(service, "broadcast:room1")
    hub.subscribe(anonymous, "broadcast:room1")
    hub.subscribe(anonymous, "table:public.aardvarks")

    state = inspector_snapshot(hub, max_channels=10)

    assert state["connections"] == {"total": 5, "by_role": {"anon": 1, "authenticated": 3, "service_role": 1}}
    assert state["kinds"] == {
        "broadcast": {"channels": 1, "subscriptions": 2},
        "table": {"channels": 2, "subscriptions": 4},
    }
    assert state["channels"] == [
        {"channel": "table:public.orders", "kind": "table", "subscriptions": 3},
        {"channel": "broadcast:room1", "kind": "broadcast", "subscriptions": 2},
        {"channel": "table:public.aardvarks", "kind": "table", "subscriptions": 1},
    ]
    assert (state["channels_total"], state["channels_listed"]) == (3, 3)
    text = orjson.dumps(state).decode()
    for private in (SECRET_CLAIM, "ops", "u0", "10.0.0.1"):
        assert private not in text  # no claim, subject or address: counts and channel names only


def test_at_most_max_channels_are_listed_the_busiest_kept() -> None:
    hub = Hub(send_queue_size=8, slow_client_timeout=0.1)
    subscribers = [hub.connect(ANONYMOUS) for _ in range(4)]
    for count, name in enumerate(("broadcast:a", "broadcast:b", "broadcast:c", "broadcast:d"), start=1):
        for subscriber in subscribers[:count]:
            hub.subscribe(subscriber, name)
    state = inspector_snapshot(hub, max_channels=2)
    assert [entry["channel"] for entry in state["channels"]] == ["broadcast:d", "broadcast:c"]
    assert (state["channels_total"], state["channels_listed"]) == (4, 2)
    hub.disconnect(subscribers[3])
    state = inspector_snapshot(hub, max_channels=2)
    assert [(e["channel"], e["subscriptions"]) for e in state["channels"]] == [
        ("broadcast:c", 3),
        ("broadcast:d", 3),
    ]
    assert state["connections"]["total"] == 3


def test_the_inspector_exists_only_when_switched_on() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/postgres"  # nothing connects: no lifespan runs here
    default = Settings(database_url=url)
    assert default.realtime_inspector is False
    off = create_app(default)
    assert "/api/realtime/inspector" not in off.openapi()["paths"]
    assert TestClient(off).get("/inspector").status_code == 404
    on = create_app(Settings(database_url=url, realtime_inspector=True))
    assert "/api/realtime/inspector" in on.openapi()["paths"]
    http = TestClient(on)
    page = http.get("/inspector")
    assert page.status_code == 200 and 'src="/inspector/inspector.js"' in page.text
    assert http.get("/inspector/inspector.js").headers["content-type"].startswith("text/javascript")
    missing = http.get("/inspector/index.html")  # only the listed assets, nothing else of the directory
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


@pytest.mark.parametrize("value", [0, 10_001])
def test_the_channel_limit_is_bounded(value: int) -> None:
    with pytest.raises(ValidationError, match="realtime_inspector_max_channels"):
        Settings(realtime_inspector_max_channels=value)
