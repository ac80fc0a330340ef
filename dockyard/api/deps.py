"""What a /v1 handler needs, as dependencies: the services and the caller's project.

Dependencies here are async: FastAPI runs a sync dependency in the thread pool, one hop to
a worker thread and back per dependency. Database work goes to the pool explicitly, and a
read handler authenticates in the same call and transaction as its read (`read_as_caller`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar
from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dockyard.api.body import read_fields
from dockyard.api.callers import (
    CHALLENGE,
    PROJECT_HEADER,
    Asked,
    Caller,
    InvalidTokenError,
    caller_in,
)
from dockyard.api.errors import ApiError
from dockyard.api.read_cache import answer_holds_until
from dockyard.api.schemas import PROJECT_HEADER_DOC
from dockyard.db import Database
from dockyard.domain.audit import act_as
from dockyard.services import Services
from dockyard.throttle import Block, request_source

T = TypeVar("T")
log = logging.getLogger("dockyard.api")

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
            headers=CHALLENGE,
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "Authorization must use the Bearer scheme: Authorization: Bearer <your API token>",
            headers=CHALLENGE,
        )
    return token


def _caller_alone(db: Database, asked: Asked, now: datetime) -> Caller:
    with db.read() as session:
        return caller_in(session, asked, now)


def _too_many(block: Block) -> ApiError:
    return ApiError(
        429,
        "Too many requests with a missing or wrong API token came from this address; "
        f"try again in {block.retry_after} seconds",
        headers={"Retry-After": str(block.retry_after)},
    )


async def _asked_and_source(request: Request, services: Services) -> tuple[Asked, str]:
    """What the request asks for and where it comes from. A source that sent too many bad
    tokens is refused before its token is even looked at; a missing token counts as a bad
    one."""
    source = request_source(request, services.settings.trusted_proxies)
    block = services.throttle.blocked(source)
    if block is not None:
        raise _too_many(block)
    try:
        return Asked.of(request, bearer_token(request)), source
    except ApiError:
        await _count_failure(services, source, None)
        raise


async def _count_failure(services: Services, source: str, asked: Asked | None) -> None:
    # An API token has no account to count against: anyone may hold it. Per source only.
    # Expired and revoked user keys count here too, like any token that does not work.
    started = services.throttle.failure(source)
    token, project = (asked.token, asked.project()[0]) if asked else (None, None)
    try:
        await run_in_threadpool(
            services.audit.failed_api_token, source, token, blocked=bool(started), project=project
        )
    except Exception:
        # The caller is refused either way; a lost event must not turn that into a 500.
        log.exception("could not record a failed API token in the audit log")


async def current_project(
    request: Request,
    services: ServicesDep,
    # Declared so that every route using this documents the header; read from the request
    # (Asked.of), which also sees a second copy of it.
    _x_nodion_project: Annotated[
        str | None, Header(alias=PROJECT_HEADER, description=PROJECT_HEADER_DOC)
    ] = None,
) -> uuid.UUID:
    """The caller's project, for handlers that work in transactions of their own; the
    caller (the token's or key's id and address) is who the audit log names for what they
    change."""
    asked, source = await _asked_and_source(request, services)
    try:
        caller = await in_api_thread(services.db, _caller_alone, services.db, asked, services.now())
    except InvalidTokenError:
        await _count_failure(services, source, asked)
        raise
    act_as(caller.actor(source))
    return caller.project_id


ProjectDep = Annotated[uuid.UUID, Depends(current_project)]


def _read_as(
    db: Database, asked: Asked, now: datetime, read: Callable[[Session, uuid.UUID], T]
) -> tuple[Caller, T]:
    with db.read() as session:
        caller = caller_in(session, asked, now)
        return caller, read(session, caller.project_id)


async def read_as_caller(
    request: Request, read: Callable[[Session, uuid.UUID], T]
) -> tuple[uuid.UUID, T]:
    """The caller's project and `read(session, project)`, authenticated and read in one
    worker-thread call and one read transaction (a dependency would be a call of its own)."""
    services: Services = request.app.state.services
    asked, source = await _asked_and_source(request, services)
    try:
        caller, found = await in_api_thread(
            services.db, _read_as, services.db, asked, services.now(), read
        )
    except InvalidTokenError:
        await _count_failure(services, source, asked)
        raise
    # A cached copy of this answer must not outlive the key that was shown it.
    answer_holds_until(request.scope, caller.expires_at)
    return caller.project_id, found


async def body_fields(request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    return await read_fields(request, services.settings.max_body_bytes)


FieldsDep = Annotated[dict[str, Any], Depends(body_fields)]
