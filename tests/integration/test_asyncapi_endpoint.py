"""GET /asyncapi.yaml serves the protocol contract, byte for byte the repository's docs/asyncapi.yaml."""

from __future__ import annotations

import httpx
import yaml

from tests.support.contract import DOCUMENT
from tests.support.server import ServerThread


async def test_the_service_serves_its_asyncapi_document(server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/asyncapi.yaml")
        openapi = (await http.get("/openapi.json")).json()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    assert response.content == DOCUMENT.read_bytes()
    assert yaml.safe_load(response.content)["asyncapi"] == "3.0.0"
    # Listed with the HTTP endpoints, so that a reader of the OpenAPI document finds it.
    assert "application/yaml" in openapi["paths"]["/asyncapi.yaml"]["get"]["responses"]["200"]["content"]
