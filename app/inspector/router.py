"""GET /inspector (the page and its two assets) and GET /api/realtime/inspector (its data, service_role only).

The page's files are read once, when the application is built, and served with a strict Content-Security-
Policy: the script and the stylesheet come from this service, the page connects only back to it (its API and
its WebSocket), and nothing else loads, so that a channel name or a payload rendered on the page cannot run.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from app.deps import ServicesDep
from app.errors import error_response
from app.inspector.snapshot import inspector_snapshot
from app.routers.service_role import AUTH_ERRORS, refuse_unless_service_role

STATIC = Path(__file__).parent / "static"
ASSET_TYPES = {
    "inspector.js": "text/javascript; charset=utf-8",
    "inspector.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class KindCounts(BaseModel):
    channels: int
    subscriptions: int


class Connections(BaseModel):
    total: int
    by_role: dict[str, int]


class ChannelEntry(BaseModel):
    channel: str
    kind: str
    subscriptions: int


class InspectorState(BaseModel):
    """This instance's connections and channels (other instances answer for their own)."""

    connections: Connections
    kinds: dict[str, KindCounts]
    channels: list[ChannelEntry]
    channels_total: int
    channels_listed: int
    last_change_id: int
    capture: str
    bus_transport: str
    bus_healthy: bool


def inspector_router() -> APIRouter:
    """The inspector's routes, its files loaded (create_app includes them when REALTIME_INSPECTOR is on)."""
    router = APIRouter()
    page = (STATIC / "index.html").read_bytes()
    assets = {name: (STATIC / name).read_bytes() for name in ASSET_TYPES}

    @router.get("/inspector", include_in_schema=False)
    async def inspector_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=HEADERS)

    @router.get("/inspector/{asset}", include_in_schema=False)
    async def inspector_asset(asset: str) -> Response:
        body = assets.get(asset)
        if body is None:
            return error_response(404, "the inspector has no such file", "not_found")
        return Response(body, media_type=ASSET_TYPES[asset], headers=HEADERS)

    @router.get("/api/realtime/inspector", response_model=InspectorState, responses=AUTH_ERRORS)
    async def inspector_state(request: Request, services: ServicesDep) -> JSONResponse:
        """Connections by role, subscriptions by channel kind and the busiest channels of this instance
        (at most REALTIME_INSPECTOR_MAX_CHANNELS); a `service_role` token is required."""
        refused = await refuse_unless_service_role(request, services, "the inspector")
        if refused is not None:
            return refused
        limit = services.settings.realtime_inspector_max_channels
        state = inspector_snapshot(services.hub, max_channels=limit)
        state.update(
            last_change_id=services.feed.last_id,
            capture=services.settings.realtime_capture,
            bus_transport=services.cluster.transport,
            bus_healthy=services.cluster.healthy,
        )
        return JSONResponse(state, headers={"Cache-Control": "no-store"})

    return router
