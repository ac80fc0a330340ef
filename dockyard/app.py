"""The ASGI application: built from one Settings object, with nothing global."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from anyio import to_thread
from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from dockyard import __version__
from dockyard.api import audit, regions, registries, repositories
from dockyard.api.errors import install_error_handlers
from dockyard.api.operations import install_operations
from dockyard.api.read_cache import CachedReads
from dockyard.body_deadline import BodyDeadline
from dockyard.client_gone import client_gone
from dockyard.config import Settings
from dockyard.console import install_console
from dockyard.domain.gc import GarbageCollector, GcBusyError
from dockyard.header_limit import HeaderLimit
from dockyard.metrics import RecordRequests, RouteLabels
from dockyard.registry.app import create_registry_app, matching_any_character
from dockyard.registry.token_endpoint import token_endpoint
from dockyard.request_id import RequestIds
from dockyard.services import Services, build_services
from dockyard.unread_body import CloseWhenBodyUnread

__all__ = ["Services", "build_services", "create_app"]
log = logging.getLogger("dockyard.gc")


async def collect_periodically(services: Services) -> None:
    """Garbage collection inside `serve`; the lock makes one replica do it per round."""
    settings = services.settings
    collector = GarbageCollector(
        services.db,
        services.registry.stores,
        grace=timedelta(seconds=settings.gc_grace_seconds),
        upload_ttl=timedelta(seconds=settings.upload_ttl_seconds),
    )
    while True:
        await asyncio.sleep(settings.gc_interval_seconds)
        try:
            report = await to_thread.run_sync(collector.run)
        except GcBusyError:
            services.metrics.gc_runs.labels("busy").inc()
            continue
        except Exception:
            services.metrics.gc_runs.labels("failed").inc()
            log.exception("garbage collection failed; trying again next round")
            continue
        services.metrics.gc_runs.labels("done").inc()
        log.info(
            "garbage collection freed %d blobs (%d bytes), %d links, %d uploads",
            report.blobs,
            report.bytes,
            report.links,
            report.uploads,
        )


class _Dockyard(FastAPI):
    """FastAPI with three middlewares outside Starlette's ServerErrorMiddleware, which
    add_middleware puts everything inside of: the 500 it answers for an unhandled error
    gets a request id like every answer, and Connection: close when the failing request's
    body was left unread; a body that comes too slowly is cut off whatever the app does."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.body_timeout = settings.body_timeout_seconds
        self.body_min_rate = settings.body_min_rate
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        inner = CloseWhenBodyUnread(super().build_middleware_stack())
        return RequestIds(
            BodyDeadline(inner, timeout=self.body_timeout, min_rate=self.body_min_rate)
        )


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    services = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        collecting = None
        if settings.gc_interval_seconds > 0:
            collecting = asyncio.create_task(collect_periodically(services))
        await services.verifier.start()
        yield
        await services.verifier.stop()
        if collecting is not None:
            collecting.cancel()
            # Wait until it has stopped: it must not use the database closed next.
            await asyncio.gather(collecting, return_exceptions=True)
        services.close()

    app = _Dockyard(
        settings,
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
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_middleware(
        CachedReads,
        feed=services.changes,
        paths=frozenset({"/v1/container_registries"}),
        now=services.now,
    )
    app.add_middleware(HeaderLimit, max_bytes=settings.max_header_bytes)
    app.include_router(registries.router)
    app.include_router(regions.router)
    app.include_router(audit.router)
    app.include_router(repositories.router)
    app.state.registry = services.registry
    # First, ahead of the /v1 routers: nearly every request is a registry client's, and
    # Starlette tries routes in order. No other route's path starts with /v2 or /auth.
    app.router.routes[:0] = [
        Route("/auth/token", token_endpoint, methods=["GET", "POST"], include_in_schema=False),
        matching_any_character(Mount("/v2", app=create_registry_app(services.registry))),
    ]

    install_operations(app, services)
    if settings.console:
        install_console(app, services)
    labels: list[RouteLabels] = []

    def route_labels() -> RouteLabels:
        if not labels:  # every route is in place by the first request
            labels.append(RouteLabels(app.routes, app.openapi()["paths"]))
        return labels[0]

    app.add_middleware(RecordRequests, metrics=services.metrics, labels=route_labels)
    return app
