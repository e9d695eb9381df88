"""The HTTP endpoints, as FastAPI's OpenAPI document describes them, exercised by schemathesis against a
real server on a real database: no 500s, responses as documented, and every error a JSON body."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, GenerationMode
from schemathesis.openapi import from_url
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import make_settings
from tests.support.channels import token
from tests.support.server import ServerThread

SERVICE_TOKEN = token("schemathesis", role="service_role")
EXAMPLES = 30  # per operation and mode: the suite's time is shared (each example is a real request)


def _check(case: schemathesis.Case, headers: dict[str, str] | None) -> None:
    # schemathesis' checks: no 5xx, documented status codes, content types, headers and bodies, and
    # schema-invalid input refused. Not "schema-valid input accepted": the documented schema is necessary,
    # not sufficient (names are limited in UTF-8 bytes, which JSON Schema cannot say; a 400 explains).
    response = case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), (response.status_code, response.text)
        body = response.json()
        assert isinstance(body, dict), body
        if case.operation.label != "GET /readyz":  # a 503 there is the readiness report, documented
            assert isinstance(body.get("error"), str) and isinstance(body.get("code"), str), body


def _exercise(operation: APIOperation, mode: GenerationMode, headers: dict[str, str] | None) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def exercise(case: schemathesis.Case) -> None:
        _check(case, headers)

    exercise()


def test_the_http_api_keeps_its_contract(server: ServerThread) -> None:
    schema = from_url(f"{server.http_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /api/realtime/inspector",
    }
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if operation.body or list(operation.iter_parameters()):
            modes.append(GenerationMode.NEGATIVE)  # malformed input: refused with a JSON error
        for mode in modes:
            # With a service_role token and without one (refused, as documented).
            for headers in ({"Authorization": f"Bearer {SERVICE_TOKEN}"}, None):
                _exercise(operation, mode, headers)


async def test_errors_outside_the_document_are_json_too(database_url: str) -> None:
    server = ServerThread(make_settings(database_url))

    async def fail() -> None:
        raise RuntimeError("a bug, with a secret detail")

    server.app.add_api_route("/fail", fail)  # an endpoint that fails as a bug would
    with server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            answers = {
                404: await http.get("/nowhere"),
                405: await http.delete("/healthz"),
                500: await http.get("/fail"),
            }
    for status, response in answers.items():
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert set(body) == {"error", "code"}, body
    assert answers[404].json()["code"] == "not_found"
    assert answers[405].json()["code"] == "method_not_allowed"
    assert "GET" in answers[405].headers["allow"]
    assert "secret" not in answers[500].text
