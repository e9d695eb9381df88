"""Every HTTP error is a JSON body, `{"error": "<a sentence>", "code": "<machine-readable>"}`, as the
broadcast endpoint answers: the framework's own (404, 405, a failed validation) and unexpected failures
(500, whose details stay in the log)."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)


def error_response(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    status = HTTPStatus(error.status_code)
    message = error.detail if isinstance(error.detail, str) else status.phrase
    code = status.phrase.lower().replace(" ", "_").replace("-", "_")
    return error_response(error.status_code, message, code, dict(error.headers or {}))


async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem.get('loc', ()))}: {problem.get('msg', 'invalid')}"
        for problem in error.errors()
    )
    return error_response(422, f"invalid request: {problems}", "invalid_request")


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    # Starlette logs the exception and its traceback after this answer; the client learns nothing of it.
    return error_response(500, "internal error: see the service's log", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _unexpected)
