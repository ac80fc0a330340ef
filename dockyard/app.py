"""The ASGI application: built from one Settings object, with nothing global."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dockyard import __version__
from dockyard.api import regions, registries
from dockyard.api.errors import error_response, install_error_handlers
from dockyard.config import Settings
from dockyard.registry.app import create_registry_app
from dockyard.registry.token_endpoint import token_endpoint
from dockyard.services import Services, build_services

__all__ = ["Services", "build_services", "create_app"]


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    services = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        services.db.dispose()

    app = FastAPI(
        title="Dockyard",
        version=__version__,
        description="The Container Registries API of a self-hosted container registry service.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = services
    install_error_handlers(app)
    app.include_router(registries.router)
    app.include_router(regions.router)
    app.state.registry = services.registry
    app.add_route("/auth/token", token_endpoint, methods=["GET", "POST"], include_in_schema=False)
    app.mount("/v2", create_registry_app(services.registry))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        def ping() -> None:
            with services.db.read() as session:
                session.connection().exec_driver_sql("SELECT 1")

        try:
            await run_in_threadpool(ping)
        except Exception:
            return error_response(503, ["The database is not reachable"])
        return JSONResponse({"status": "ok"})

    return app
