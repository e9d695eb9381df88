"""WebSocket /realtime: admits a connection (capacity, origin, token, connection limits), then hands it to
app.connection, which serves it from there on."""

from __future__ import annotations

import contextlib
import math

from fastapi import APIRouter, FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app import protocol
from app.config import Settings
from app.connection import CLOSE_POLICY_VIOLATION, AsgiSocket, Connection
from app.deps import ServicesDep
from app.services.auth import ANONYMOUS, AuthError, Principal
from app.services.container import Services
from app.services.limits import LimitExceeded, origin_allowed
from app.wire import FRAME_WRITER, FrameWriter

router = APIRouter()

CLOSE_TRY_AGAIN_LATER = 1013


REALTIME_PATH = "/realtime"


@router.websocket(REALTIME_PATH)
async def realtime_route(websocket: WebSocket, services: ServicesDep) -> None:
    await realtime_socket(websocket, services)


def realtime_front_door(app: FastAPI) -> ASGIApp:
    """The application, with WebSockets on /realtime served without the framework's middleware and
    routing, which cost a connect storm more CPU than the admission itself (app.server runs this).
    Everything else, and the route above (for other servers and for the API document), goes to `app`."""

    async def front_door(scope: Scope, receive: Receive, send: Send) -> None:
        services = getattr(app.state, "services", None)
        if scope["type"] == "websocket" and scope["path"] == REALTIME_PATH and services is not None:
            await realtime_socket(WebSocket(scope, receive, send), services)
            return
        await app(scope, receive, send)

    return front_door


async def realtime_socket(websocket: WebSocket, services: Services) -> None:
    # Past capacity, the refusal comes before the upgrade and costs nothing more: a storm of clients gets
    # fast 503s it retries after a backoff, rather than timeouts for everyone.
    # Past the loop's lag bound, when one is set, the same: the connections it has are late already, and
    # each one admitted now would make them later (off by default: refused clients reconnect later too).
    bound = services.settings.realtime_max_loop_lag_seconds
    if bound and (lag := services.loop_lag.recent()) > bound:
        services.traffic.refused["overloaded"] += 1
        reason = f"the server is overloaded (its event loop runs {lag:.1f} s late): retry after a backoff"
        await _deny(websocket, services.settings, reason, wait=math.ceil(lag))
        return
    if not services.limits.enter():
        limit = services.settings.realtime_max_connections
        await _deny(
            websocket,
            services.settings,
            f"the server is at capacity ({limit} connections): retry after a backoff",
        )
        return
    try:
        connection = await _admit(websocket, services)
    finally:
        services.limits.leave()
    if connection is not None:
        await connection.serve(websocket)  # another server than app.wire's: this task serves it, as ASGI does


async def _admit(websocket: WebSocket, services: Services) -> Connection | None:
    """Accept, check, and hand the connection over to app.wire; returns once it holds its lease or was
    refused: the connection for this task to serve when another server than app.wire's runs the app."""
    await websocket.accept()
    client = f"{websocket.client.host}:{websocket.client.port}" if websocket.client else ""
    # Every refusal at connect is an `error` and a close with 1008, and happens before anything is counted.
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, services.settings.realtime_allowed_origins):
        services.traffic.refused["origin"] += 1
        await _refuse(websocket, f"origin {_clip(origin)!r} is not allowed to connect", "origin not allowed")
        return None
    principal = await _authenticate(websocket, services)
    if isinstance(principal, AuthError):
        services.traffic.refused["token"] += 1
        await _refuse(websocket, str(principal), "invalid token")
        return None
    try:
        lease = services.limits.acquire(
            principal.user_id, websocket.client.host if websocket.client else None
        )
    except LimitExceeded as error:
        await _refuse(websocket, str(error), "too many connections")
        return None
    socket: FrameWriter | None = websocket.scope.get("extensions", {}).get(FRAME_WRITER)
    try:
        connection = Connection(socket or AsgiSocket(websocket), socket, services, principal, client, lease)
    except BaseException:
        lease.release()
        raise
    if socket is not None:
        # From here on the connection is served without this task (app.wire): it returns, and with it go
        # the framework's coroutine frames and the handshake's objects. An idle connection runs no task.
        socket.detach(connection.receive)
        return None
    return connection


async def _deny(websocket: WebSocket, settings: Settings, reason: str, wait: int = 0) -> None:
    """HTTP 503 with Retry-After (at least `wait` seconds) instead of the upgrade (close 1013, try again
    later, after it on a server without the denial extension). Both SDKs wait at least the Retry-After,
    plus their jitter."""
    body = {"error": reason, "code": "unavailable"}
    retry_after = max(settings.realtime_retry_after_seconds, wait)
    try:
        await websocket.send_denial_response(
            JSONResponse(body, status_code=503, headers={"Retry-After": str(retry_after)})
        )
    except RuntimeError:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.accept()
            await websocket.close(CLOSE_TRY_AGAIN_LATER, "try again later")


async def _authenticate(websocket: WebSocket, services: Services) -> Principal | AuthError:
    """The token comes from `Authorization: Bearer <token>` or `?token=`, never both; none: anonymous."""
    headers = websocket.headers.getlist("authorization")
    tokens = [token for token in websocket.query_params.getlist("token") if token]
    if len(headers) + len(tokens) > 1:
        return AuthError(
            "more than one token was sent (Authorization header and ?token=, or either twice): send one"
        )
    if headers:
        scheme, _, token = headers[0].strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return AuthError("the Authorization header must be 'Bearer <token>'")
    elif tokens:
        token = tokens[0]
    else:
        return ANONYMOUS
    try:
        return await services.verifier.verify(token)
    except AuthError as error:
        return error


async def _refuse(websocket: WebSocket, error: str, reason: str) -> None:
    """Refuse a connection that was never served: an `error` saying why, then close 1008."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):  # the client may be gone
        await websocket.send_text(protocol.encode_error(error))
        await websocket.close(CLOSE_POLICY_VIOLATION, reason)


def _clip(text: str | None, limit: int = 100) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit] + "…"
