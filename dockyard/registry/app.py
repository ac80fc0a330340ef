"""The /v2 application: routes to one handler module per resource, OCI errors in one place."""

from __future__ import annotations

import logging
import re

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard.client_gone import client_gone
from dockyard.registry import blobs, listings, manifests, uploads
from dockyard.registry.access import authenticate
from dockyard.registry.context import RegistryContext, get_context
from dockyard.registry.errors import RegistryError
from dockyard.storage.base import StorageError
from dockyard.unavailable import (
    HANDLED,
    RETRY_AFTER,
    V2_MESSAGE,
    is_foreign_key_violation,
    is_unavailable,
    log_unavailable,
)

log = logging.getLogger("dockyard.registry")
API_VERSION = (b"docker-distribution-api-version", b"registry/2.0")


async def version_check(request: Request) -> Response:
    """GET /v2/: 200 with a valid token, else the 401 that starts the token dance."""
    context = get_context(request)
    await authenticate(context, request, context.region(request), None)
    return JSONResponse({})


async def _registry_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return exc.response()


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return RegistryError("UNSUPPORTED", "method not allowed here").response()
    return RegistryError(
        "UNSUPPORTED", "no such endpoint in the registry API", status=exc.status_code
    ).response()


async def _storage_error(request: Request, exc: Exception) -> Response:
    log.error("storage failed on %s %s: %s", request.method, request.url.path, exc)
    return RegistryError(
        "UNAVAILABLE", "storage is unavailable; try again", headers={"Retry-After": "1"}
    ).response()


async def _database_error(request: Request, exc: Exception) -> Response:
    if is_foreign_key_violation(exc):
        # The request's transaction rolled back; a retried push creates the repository anew.
        name = request.path_params.get("name")
        return RegistryError(
            "NAME_UNKNOWN", "the repository was deleted during this request", detail={"name": name}
        ).response()
    if not is_unavailable(exc):  # an integrity or programming error: a bug, a 500
        return await _unexpected(request, exc)
    log_unavailable(request.method, request.url.path, exc)
    return RegistryError("UNAVAILABLE", V2_MESSAGE, headers=RETRY_AFTER).response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return RegistryError("UNKNOWN", "internal error; try again").response()


class ApiVersionHeader:
    """Every /v2 answer says which protocol it speaks, as clients check."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Mount.routes reads this: what is mounted at /v2 lists its routes (metrics labels).
        self.routes = getattr(app, "routes", [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), API_VERSION]
            await send(message)

        await self.app(scope, receive, send_with_header)


def matching_any_character(route: Route | Mount) -> Route | Mount:
    """Starlette's `path` convertor is `.*`, which stops at a newline, so `/v2/a%0Ab/...`
    would fall through to a bare 404 of the outer app. Matched across lines, the name or
    reference reaches its parser and gets the OCI error it deserves (NAME_INVALID...)."""
    route.path_regex = re.compile(route.path_regex.pattern, re.DOTALL)
    return route


def create_registry_app(context: RegistryContext) -> ASGIApp:
    name = "/{name:path}"
    # Starlette tries routes in order: the pulls come first, as most requests are pulls.
    # The last two segments of a path decide which route it is, so the order never changes
    # which route a path matches.
    routes = [
        Route(f"{name}/manifests/{{reference}}", manifests.get_manifest, methods=["GET"]),
        Route(f"{name}/blobs/{{digest}}", blobs.get_blob, methods=["GET"]),
        Route("/", version_check, methods=["GET"]),
        Route("/_catalog", listings.catalog, methods=["GET"]),
        Route(f"{name}/blobs/uploads/", uploads.start_upload, methods=["POST"]),
        Route(f"{name}/blobs/uploads", uploads.start_upload, methods=["POST"]),
        Route(f"{name}/blobs/uploads/{{upload_id}}", uploads.upload_status, methods=["GET"]),
        Route(f"{name}/blobs/uploads/{{upload_id}}", uploads.upload_chunk, methods=["PATCH"]),
        Route(f"{name}/blobs/uploads/{{upload_id}}", uploads.finish_upload, methods=["PUT"]),
        Route(f"{name}/blobs/uploads/{{upload_id}}", uploads.cancel_upload, methods=["DELETE"]),
        Route(f"{name}/blobs/{{digest}}", blobs.delete_blob, methods=["DELETE"]),
        Route(f"{name}/manifests/{{reference}}", manifests.put_manifest, methods=["PUT"]),
        Route(f"{name}/manifests/{{reference}}", manifests.delete_manifest, methods=["DELETE"]),
        Route(f"{name}/tags/list", listings.list_tags, methods=["GET"]),
        Route(f"{name}/referrers/{{digest}}", listings.list_referrers, methods=["GET"]),
    ]
    app = Starlette(
        routes=[matching_any_character(route) for route in routes],
        exception_handlers={
            RegistryError: _registry_error,
            HTTPException: _http_error,
            StorageError: _storage_error,
            **dict.fromkeys(HANDLED, _database_error),
            ClientDisconnect: client_gone,
            Exception: _unexpected,
        },
    )
    app.state.registry = context
    return ApiVersionHeader(app)
