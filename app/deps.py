"""FastAPI dependencies: typed access to the services the lifespan owns."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.requests import HTTPConnection

from app.services.container import Services
from app.workers.siblings import Siblings


async def get_services(connection: HTTPConnection) -> Services:
    # async: a plain function would run in a worker thread, a thread hop per connection and request.
    services: Services = connection.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_siblings(connection: HTTPConnection) -> Siblings | None:
    """The other workers of this instance (REALTIME_WORKERS > 1), None when the process serves alone."""
    siblings: Siblings | None = getattr(connection.app.state, "siblings", None)
    return siblings


SiblingsDep = Annotated[Siblings | None, Depends(get_siblings)]
