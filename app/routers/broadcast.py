"""POST /api/realtime/broadcast: backends send messages to broadcast channels.

Each message is written with realtime_broadcast() in one transaction, so it travels exactly as a message
sent from the database does: delivered on every instance, with an id, replayable with `since`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app import protocol
from app.deps import ServicesDep
from app.errors import error_response
from app.routers.service_role import AUTH_ERRORS, error_responses, refuse_unless_service_role

log = logging.getLogger(__name__)
router = APIRouter()

SEND = "SELECT realtime_broadcast(%s, %s, %s::jsonb)"

_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["channel", "event"],
    "properties": {
        # Names: 1 to 200 UTF-8 bytes without control characters (bytes cannot be said in JSON Schema:
        # the lengths below are in characters, and a longer name in bytes is refused with a 400).
        "channel": {
            "type": "string",
            "pattern": "^broadcast:[^\\u0000-\\u001f\\u007f-\\u009f]+$",
            "maxLength": 210,
            "examples": ["broadcast:room1"],
        },
        "event": {"type": "string", "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$", "maxLength": 200},
        "payload": {"description": "any JSON value (default null)"},
    },
}
_ERRORS = {
    **error_responses((400, "malformed request")),
    **AUTH_ERRORS,
    **error_responses((413, "request body too large"), (503, "the database is unavailable")),
}


@router.post(
    "/api/realtime/broadcast",
    status_code=202,
    responses={
        202: {
            "description": "accepted: delivered to subscribers on every instance once committed",
            "content": {
                "application/json": {
                    "schema": {"type": "object", "properties": {"accepted": {"type": "integer"}}}
                }
            },
        },
        **_ERRORS,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [_MESSAGE_SCHEMA, {"type": "array", "items": _MESSAGE_SCHEMA, "minItems": 1}]
                    }
                }
            },
        }
    },
)
async def send_broadcast(request: Request, services: ServicesDep) -> JSONResponse:
    """Send one message, or a list of them, to broadcast channels (a `service_role` token is required)."""
    refused = await refuse_unless_service_role(request, services, "broadcasting over HTTP")
    if refused is not None:
        return refused
    limit = services.settings.realtime_max_http_broadcast_bytes
    body = await _read_body(request, limit)
    if body is None:
        return error_response(413, f"request body is larger than {limit} bytes", "payload_too_large")
    try:
        messages = _parse(body)
    except protocol.ProtocolError as error:
        return error_response(400, str(error), "invalid_request")
    try:
        async with services.pool.connection() as conn, conn.transaction():
            async with conn.cursor() as cursor:
                await cursor.executemany(SEND, messages)
    except psycopg.Error:
        log.exception("http_broadcast_failed messages=%d", len(messages))
        return error_response(503, "the database is unavailable: nothing was sent, try again", "unavailable")
    return JSONResponse({"accepted": len(messages)}, status_code=202)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is over `limit` bytes (reading stops there)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> list[tuple[str, str, str]]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise protocol.ProtocolError("malformed JSON") from None
    items = value if isinstance(value, list) else [value]
    if not items:
        raise protocol.ProtocolError("send at least one message")
    messages = []
    for position, item in enumerate(items):
        where = f"message {position}: " if isinstance(value, list) else ""
        if not isinstance(item, dict):
            raise protocol.ProtocolError(f"{where}a message must be a JSON object")
        try:
            channel = protocol.parse_channel(item.get("channel"))
            if not isinstance(channel, protocol.BroadcastChannel):
                raise protocol.ProtocolError("channel must be a broadcast channel ('broadcast:name')")
            event = item.get("event")
            if not isinstance(event, str):
                raise protocol.ProtocolError("event must be a string naming the kind of message")
            protocol.check_name(event, "event", protocol.MAX_EVENT_BYTES)
            payload = orjson.dumps(item.get("payload")).decode()
        except protocol.ProtocolError as error:
            raise protocol.ProtocolError(f"{where}{error}") from None
        except orjson.JSONEncodeError:
            raise protocol.ProtocolError(f"{where}the payload is nested too deeply") from None
        messages.append((channel.topic, event, payload))
    return messages
