"""/v1/container_registries: list, read, create, update, delete, and credentials."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dockyard.api.body import FORM, JSON
from dockyard.api.deps import FieldsDep, ProjectDep, ServicesDep, read_as_caller
from dockyard.api.schemas import (
    KEY_REFUSALS,
    PROJECT_PARAMETER,
    THROTTLED,
    UNAUTHORIZED,
    ContainerRegistryEnvelope,
    ContainerRegistryList,
    ContainerRegistryOut,
    CredentialsCreate,
    CredentialsEnvelope,
    CredentialsOut,
    CredentialsRotate,
    ErrorBody,
    RegistryCreate,
    RegistryUpdate,
    RotatedCredentialsEnvelope,
    RotatedCredentialsOut,
    json_response,
    not_found,
)
from dockyard.domain.registries import RegistryView

router = APIRouter(prefix="/v1/container_registries", tags=["container registries"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    **KEY_REFUSALS,
    **UNAUTHORIZED,
    **not_found("No such registry in this project"),
    **THROTTLED,
}
_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The request was refused; see the sentences"},
    **_ERRORS,
}
# What body.read_fields refuses before a handler sees the fields.
_BODY_REFUSALS: dict[int | str, dict[str, Any]] = {
    **_REFUSALS,
    413: {"model": ErrorBody, "description": "The body is larger than DOCKYARD_MAX_BODY_BYTES"},
    415: {"model": ErrorBody, "description": "The body is neither JSON nor a form"},
}


def _body(
    model: type[RegistryCreate | RegistryUpdate | CredentialsCreate | CredentialsRotate],
) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": model is RegistryCreate,
            "content": {JSON: {"schema": schema}, FORM: {"schema": schema}},
        }
    }


@router.get(
    "", response_model=ContainerRegistryList, responses=_ERRORS, openapi_extra=PROJECT_PARAMETER
)
async def list_registries(request: Request, services: ServicesDep) -> Response:
    """The project's managed registry of every region first, then its external ones."""
    project, views = await read_as_caller(request, services.registries.list_in)
    if views is None:
        # A write, which may wait for the database's lock: not in /v1's few read threads.
        views = await run_in_threadpool(services.registries.list_creating_managed, project)
    zone = services.settings.zone
    listed = ContainerRegistryList(
        container_registries=[ContainerRegistryOut.of(view, zone) for view in views]
    )
    return json_response(listed)


@router.post("", responses=_BODY_REFUSALS, openapi_extra=_body(RegistryCreate))
def create_registry(
    project: ProjectDep, fields: FieldsDep, services: ServicesDep
) -> ContainerRegistryEnvelope:
    """Connect an external registry (docker_hub, ghcr or custom)."""
    view = services.registries.create(project, fields)
    services.verifier.follow(view)  # the check runs after this answer, in the background
    return ContainerRegistryEnvelope.of(view, services.settings.zone)


@router.get(
    "/{registry_id}",
    response_model=ContainerRegistryEnvelope,
    responses=_ERRORS,
    openapi_extra=PROJECT_PARAMETER,
)
async def get_registry(registry_id: str, request: Request, services: ServicesDep) -> Response:
    def read(session: Session, project: uuid.UUID) -> RegistryView:
        return services.registries.get_in(session, project, registry_id)

    _, view = await read_as_caller(request, read)
    return json_response(ContainerRegistryEnvelope.of(view, services.settings.zone))


@router.patch("/{registry_id}", responses=_BODY_REFUSALS, openapi_extra=_body(RegistryUpdate))
def update_registry(
    registry_id: str, project: ProjectDep, fields: FieldsDep, services: ServicesDep
) -> ContainerRegistryEnvelope:
    """Change an external registry; omitted fields keep their value."""
    view = services.registries.update(project, registry_id, fields)
    services.verifier.follow(view)  # when the host or credentials changed
    return ContainerRegistryEnvelope.of(view, services.settings.zone)


@router.delete("/{registry_id}", responses=_REFUSALS)
def delete_registry(
    registry_id: str, project: ProjectDep, services: ServicesDep
) -> ContainerRegistryEnvelope:
    """Remove an external registry; answers with its last state."""
    view = services.registries.delete(project, registry_id)
    return ContainerRegistryEnvelope.of(view, services.settings.zone)


@router.post("/{registry_id}/verify", status_code=202, responses=_REFUSALS)
def verify_registry(
    registry_id: str, project: ProjectDep, services: ServicesDep
) -> ContainerRegistryEnvelope:
    """Check an external registry again: answers at once, in status `verifying`, and the
    check runs in the background (GET the registry to see its result). A registry being
    checked already is not checked twice. Managed registries are always available (400)."""
    view = services.registries.request_check(project, registry_id)
    services.verifier.follow(view)
    return ContainerRegistryEnvelope.of(view, services.settings.zone)


@router.post(
    "/{registry_id}/credentials",
    status_code=201,
    responses=_BODY_REFUSALS,
    openapi_extra=_body(CredentialsCreate),
)
def generate_credentials(
    registry_id: str, project: ProjectDep, fields: FieldsDep, services: ServicesDep
) -> CredentialsEnvelope:
    """Create the robot account of a managed registry; the password is shown only here.
    No body is needed; `expires_in` (seconds) makes the password stop working then."""
    generated = services.credentials.generate(project, registry_id, fields)
    return CredentialsEnvelope(
        container_registry=CredentialsOut.of(generated, services.settings.zone)
    )


@router.post(
    "/{registry_id}/credentials/rotate",
    responses=_BODY_REFUSALS,
    openapi_extra=_body(CredentialsRotate),
)
def rotate_credentials(
    registry_id: str, project: ProjectDep, fields: FieldsDep, services: ServicesDep
) -> RotatedCredentialsEnvelope:
    """A new password for the same username, shown only here. The old one keeps working
    for `grace_period` seconds (default a day, at most 7 days; 0 stops it at once); a
    rotation within that time stops the one before the old one at once."""
    rotated = services.credentials.rotate(project, registry_id, fields)
    return RotatedCredentialsEnvelope(
        container_registry=RotatedCredentialsOut.of_rotated(rotated, services.settings.zone)
    )


@router.delete("/{registry_id}/credentials", responses=_REFUSALS)
def revoke_credentials(
    registry_id: str, project: ProjectDep, services: ServicesDep
) -> ContainerRegistryEnvelope:
    """Revoke the robot account at once; a new POST then generates a new pair."""
    view = services.credentials.revoke(project, registry_id)
    return ContainerRegistryEnvelope.of(view, services.settings.zone)
