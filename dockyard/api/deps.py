"""What a /v1 handler needs, as dependencies: the services and the caller's project."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Request

from dockyard.api.body import read_fields
from dockyard.api.errors import ApiError
from dockyard.domain.projects import project_for_token
from dockyard.services import Services

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="dockyard"'}


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def current_project(request: Request, services: ServicesDep) -> uuid.UUID:
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
    project_id = project_for_token(services.db, token)
    if project_id is None:
        raise ApiError(401, "API token is invalid or has been revoked", headers=_CHALLENGE)
    return project_id


ProjectDep = Annotated[uuid.UUID, Depends(current_project)]


async def body_fields(request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    return await read_fields(request, services.settings.max_body_bytes)


FieldsDep = Annotated[dict[str, Any], Depends(body_fields)]
