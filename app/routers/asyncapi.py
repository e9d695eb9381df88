"""GET /asyncapi.yaml: the WebSocket protocol as an AsyncAPI 3.0 document (docs/asyncapi.yaml), next to
FastAPI's /openapi.json for the HTTP endpoints."""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

# Next to the package, like alembic/ and sql/ (the install is editable).
ASYNCAPI_DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
MEDIA_TYPE = "application/yaml"  # RFC 9512

router = APIRouter()


@functools.cache
def _document() -> bytes:
    # Read once, on first request: the file ships with the code (see the Dockerfile) and does not change.
    return ASYNCAPI_DOCUMENT.read_bytes()


@router.get(
    "/asyncapi.yaml",
    response_class=Response,
    responses={200: {"description": "The AsyncAPI 3.0 document", "content": {MEDIA_TYPE: {}}}},
)
async def asyncapi_document() -> Response:
    """The WebSocket protocol of /realtime: every client and server message, with JSON Schemas."""
    return Response(_document(), media_type=MEDIA_TYPE)
