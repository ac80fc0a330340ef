"""What a /v1 handler needs, as dependencies: the services and the caller's project.

Dependencies here are async: FastAPI runs a sync dependency in the thread pool, one hop to
a worker thread and back per dependency. Database work goes to the pool explicitly, and a
read handler authenticates in the same call and transaction as its read (`read_as_caller`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from dockyard.api.body import read_fields
from dockyard.api.errors import ApiError
from dockyard.db import Database
from dockyard.domain.projects import project_for_token_in
from dockyard.services import Services

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="dockyard"'}
T = TypeVar("T")

# Threads for /v1's database work, apart from the default pool (40) in which /v2 streams
# blobs. On SQLite that work is Python from end to end (the file is in this process), so a
# second thread only contends for the GIL: listing 50 registries at 32 connections, one
# thread served 600 requests/s, two 460, four 350. PostgreSQL's round trips release the GIL:
# on loopback one thread still served most (490; four 460, eight 380), but a server 0.5 ms
# away would keep one thread waiting for most of each request, so a few overlap those waits.
SQLITE_THREADS = 1
SERVER_DB_THREADS = 4
_limiters: RunVar[dict[Database, CapacityLimiter]] = RunVar("dockyard_api_limiters")


def _limiter(db: Database) -> CapacityLimiter:
    try:
        limiters = _limiters.get()
    except LookupError:  # the first call in this event loop
        limiters = {}
        _limiters.set(limiters)
    if db not in limiters:
        limiters[db] = CapacityLimiter(SQLITE_THREADS if db.is_sqlite else SERVER_DB_THREADS)
    return limiters[db]


async def in_api_thread(db: Database, read: Callable[..., T], *args: Any) -> T:
    """`read(*args)`, a short read of `db`, in a worker thread of /v1's own few. Writes,
    which may wait for a lock, go to the default pool instead."""
    return await to_thread.run_sync(read, *args, limiter=_limiter(db))


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_token(request: Request) -> str:
    """The API token of `Authorization: Bearer <token>`; 401 if the header has none."""
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(
            401,
            "Authorization header is missing; send Authorization: Bearer <your API token>",
            headers=_CHALLENGE,
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "Authorization must use the Bearer scheme: Authorization: Bearer <your API token>",
            headers=_CHALLENGE,
        )
    return token


def authenticate(session: Session, token: str) -> uuid.UUID:
    """The token's project, read in the caller's transaction; 401 if unknown or revoked."""
    project_id = project_for_token_in(session, token)
    if project_id is None:
        raise ApiError(401, "API token is invalid or has been revoked", headers=_CHALLENGE)
    return project_id


def _authenticate_alone(db: Database, token: str) -> uuid.UUID:
    with db.read() as session:
        return authenticate(session, token)


async def current_project(request: Request, services: ServicesDep) -> uuid.UUID:
    """The caller's project, for handlers that work in transactions of their own."""
    token = bearer_token(request)
    return await in_api_thread(services.db, _authenticate_alone, services.db, token)


ProjectDep = Annotated[uuid.UUID, Depends(current_project)]


def _read_as(
    db: Database, token: str, read: Callable[[Session, uuid.UUID], T]
) -> tuple[uuid.UUID, T]:
    with db.read() as session:
        project_id = authenticate(session, token)
        return project_id, read(session, project_id)


async def read_as_caller(
    request: Request, read: Callable[[Session, uuid.UUID], T]
) -> tuple[uuid.UUID, T]:
    """The caller's project and `read(session, project)`, authenticated and read in one
    worker-thread call and one read transaction (a dependency would be a call of its own)."""
    services: Services = request.app.state.services
    token = bearer_token(request)
    return await in_api_thread(services.db, _read_as, services.db, token, read)


async def body_fields(request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    return await read_fields(request, services.settings.max_body_bytes)


FieldsDep = Annotated[dict[str, Any], Depends(body_fields)]
