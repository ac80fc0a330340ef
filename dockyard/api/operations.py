"""What the operators' tools call: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac
import logging
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from dockyard.api.errors import error_response
from dockyard.services import Services
from dockyard.storage.base import StorageError

log = logging.getLogger("dockyard.operations")
# A key no blob or upload ever has: stat() of it only proves the store answers.
PROBE_KEY = "readiness-probe"


def install_operations(app: FastAPI, services: Services) -> None:
    settings = services.settings
    ttl = timedelta(seconds=settings.upload_ttl_seconds)
    services.metrics.watch(
        "dockyard_upload_sessions",
        "Upload sessions begun and not yet finished, cancelled or expired (all replicas)",
        lambda: services.registry.uploads.count_all_open(ttl),
    )

    def ping_database() -> None:
        with services.db.read_connection() as connection:
            connection.exec_driver_sql("SELECT 1")

    async def database_answers() -> bool:
        try:
            await run_in_threadpool(ping_database)
        except Exception as exc:
            log.warning("readiness: the database does not answer: %s", type(exc).__name__)
            return False
        return True

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        """Liveness, and the database, as before /readyz existed."""
        if not await database_answers():
            return error_response(503, ["The database is not reachable"])
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Ready to serve: the database and every region's storage answer."""
        checks = {"database": "ok" if await database_answers() else "unreachable"}
        for region_id, store in services.registry.stores.items():
            try:
                await store.stat(PROBE_KEY)
                checks[f"storage:{region_id}"] = "ok"
            except StorageError as exc:
                log.warning("readiness: storage of region %s fails: %s", region_id, exc)
                checks[f"storage:{region_id}"] = "unreachable"
        ready = all(state == "ok" for state in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        token = settings.metrics_token
        if token is not None:
            sent = request.headers.get("authorization", "")
            expected = f"Bearer {token.get_secret_value()}"
            if not hmac.compare_digest(sent.encode(), expected.encode()):
                return error_response(
                    401,
                    ["GET /metrics needs Authorization: Bearer <DOCKYARD_METRICS_TOKEN>"],
                    {"WWW-Authenticate": "Bearer"},
                )
        body = await run_in_threadpool(services.metrics.scrape)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
