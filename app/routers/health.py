"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.deps import ServicesDep

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving requests."""
    return {"status": "ok"}


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    database: bool
    listener: bool


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "the database or the listener is down"}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """Ready when the database answers and the listener is connected (changes are flowing)."""
    database = True
    try:
        async with services.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except Exception:
        database = False
    listener = services.listener.connected
    ready = database and listener
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "database": database, "listener": listener},
        status_code=200 if ready else 503,
    )
