"""FastAPI dependencies: typed access to the services the lifespan owns."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.requests import HTTPConnection

from app.services.container import Services


async def get_services(connection: HTTPConnection) -> Services:
    # async: a plain function would run in a worker thread, a thread hop per connection and request.
    services: Services = connection.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
