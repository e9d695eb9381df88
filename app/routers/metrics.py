"""GET /metrics: Prometheus' text format (app.metrics)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.requests import HTTPConnection
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

router = APIRouter()


def get_registry(connection: HTTPConnection) -> CollectorRegistry:
    registry: CollectorRegistry = connection.app.state.metrics_registry
    return registry


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(registry: Annotated[CollectorRegistry, Depends(get_registry)]) -> Response:
    """The service's metrics in Prometheus' text exposition format (fluxbase_realtime_*, process_*)."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
