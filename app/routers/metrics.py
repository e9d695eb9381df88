"""GET /metrics: Prometheus' text format (app.metrics); with workers, every worker's (app.workers.figures)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.requests import HTTPConnection
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from app.deps import SiblingsDep
from app.workers.figures import merged_exposition

router = APIRouter()


def get_registry(connection: HTTPConnection) -> CollectorRegistry:
    registry: CollectorRegistry = connection.app.state.metrics_registry
    return registry


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(
    request: Request,
    registry: Annotated[CollectorRegistry, Depends(get_registry)],
    siblings: SiblingsDep,
) -> Response:
    """The service's metrics in Prometheus' text exposition format (fluxbase_realtime_*, process_*); with
    several workers, every worker's samples, labelled `worker`."""
    if siblings is None or siblings.asked_by_sibling(request.headers):
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    answers = await siblings.fetch("/metrics")
    texts = {index: None if answer is None else answer.text for index, answer in answers.items()}
    return Response(
        merged_exposition(registry, siblings.index, siblings.count, texts), media_type=CONTENT_TYPE_LATEST
    )
