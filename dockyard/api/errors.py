"""The /v1 error body, {"errors": [sentences]}, and the one place that renders it."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from dockyard.domain.errors import DomainError, NotFoundError
from dockyard.unavailable import HANDLED, RETRY_AFTER, V1_SENTENCE, is_unavailable, log_unavailable

log = logging.getLogger("dockyard.api")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class ApiError(Exception):
    """A refusal decided by the HTTP layer itself (auth, body format, size)."""

    def __init__(self, status: int, *messages: str, headers: dict[str, str] | None = None) -> None:
        super().__init__("; ".join(messages))
        self.status = status
        self.messages = list(messages)
        self.headers = headers


def error_response(
    status: int, messages: list[str], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"errors": messages}, status_code=status, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path (Starlette's 405 names only the first)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def _http_error_parts(
    request: Request, exc: StarletteHTTPException
) -> tuple[str, Mapping[str, str] | None]:
    if exc.status_code == 404:
        return f"No such endpoint: {request.method} {request.url.path}", exc.headers
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        return (
            f"Method {request.method} is not allowed on {request.url.path}; "
            f"use one of {', '.join(allowed)}",
            {"Allow": ", ".join(allowed)},
        )
    return str(exc.detail), exc.headers


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.messages, exc.headers)

    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return error_response(404 if isinstance(exc, NotFoundError) else 400, exc.messages)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        sentence, headers = _http_error_parts(request, exc)
        return error_response(exc.status_code, [sentence], headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        sentences = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            sentences.append(f"{where or 'Request'}: {error.get('msg', 'is invalid')}")
        return error_response(400, sentences or ["The request is invalid"])

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, ["Something went wrong on our side; please try again"])

    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        if not is_unavailable(exc):  # an integrity or programming error: a bug, a 500
            return await _unexpected(request, exc)
        log_unavailable(request.method, request.url.path, exc)
        return error_response(503, [V1_SENTENCE], RETRY_AFTER)

    for kind in HANDLED:
        app.add_exception_handler(kind, _database_error)
