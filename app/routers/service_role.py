"""The check every service_role-only HTTP endpoint makes: `Authorization: Bearer <JWT>` whose role is
service_role. One place, so that the broadcast endpoint and the inspector's API refuse alike."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from app.errors import error_response
from app.services.audience import SERVICE_ROLE
from app.services.auth import AuthError
from app.services.container import Services

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
}


def error_responses(*statuses: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for JSON errors, `(status, what it means)` each."""
    return {
        status: {"description": what, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for status, what in statuses
    }


AUTH_ERRORS = error_responses((401, "no valid token"), (403, "the token's role is not service_role"))


async def refuse_unless_service_role(request: Request, services: Services, doing: str) -> JSONResponse | None:
    """None when the request carries a valid service_role token; else the 401 or 403 to answer.

    `doing` completes the 403's sentence ("<doing> needs a token whose role is service_role"). The
    token is never logged nor echoed: AuthError's text does not contain it.
    """
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("send 'Authorization: Bearer <service_role JWT>'")
    try:
        principal = await services.verifier.verify(token.strip())
    except AuthError as error:
        return _unauthorized(f"token refused: {error}")
    if principal.role != SERVICE_ROLE:
        return error_response(403, f"{doing} needs a token whose role is service_role", "forbidden")
    return None


def _unauthorized(message: str) -> JSONResponse:
    return error_response(401, message, "unauthorized", {"WWW-Authenticate": "Bearer"})
