"""/v1/audit_events: what happened in the caller's project, newest first, a page at a time."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from dockyard.api.deps import ProjectDep, ServicesDep, in_api_thread
from dockyard.api.schemas import (
    KEY_REFUSALS,
    THROTTLED,
    UNAUTHORIZED,
    ErrorBody,
    Page,
    PageMeta,
    PerPage,
    format_time,
    json_response,
)
from dockyard.domain.audit import EventPage, EventView

router = APIRouter(prefix="/v1/audit_events", tags=["audit log"])

ACTIONS = (
    "credentials.generated, credentials.rotated, credentials.revoked, registry.created, "
    "registry.updated, registry.deleted, repository.deleted, tag.deleted, login.failed, "
    "login.blocked (the first failure that got a source or an account throttled; its refused "
    "attempts are not recorded one by one)"
)


class AuditEventOut(BaseModel):
    id: uuid.UUID
    # Plain strings, not enums: an older server must not fail on a newer server's rows.
    action: str = Field(examples=["registry.created"], description=ACTIONS)
    actor_type: str = Field(
        examples=["api_token"],
        description="api_token: a /v1 call with a project API token (actor: the token's "
        "id); user_api_key: a /v1 call with a user API key (actor: the key's id); robot: a "
        "login with a robot's username (actor: the username); anonymous: a login naming no "
        "one we know; local: the admin command line",
    )
    actor: str | None = Field(examples=["robot$project-a1b2c3d4"])
    registry_id: uuid.UUID | None = Field(description="the registry acted on, if any")
    source_address: str | None = Field(examples=["203.0.113.7"])
    subject: str | None = Field(
        examples=["a1b2c3d4-e5f6-7890-abcd-ef1234567890/app:latest"],
        description="what inside the registry was acted on: the repository of "
        "repository.deleted, <repository>:<tag> of tag.deleted; null for the others",
    )
    project_id: uuid.UUID
    created_at: str = Field(examples=["2025-01-15T10:00:00.000+01:00"])


class AuditEventList(BaseModel):
    audit_events: list[AuditEventOut]
    meta: PageMeta


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "page or per_page is out of range"},
    **UNAUTHORIZED,
    **KEY_REFUSALS,
    **THROTTLED,
}


def _out(event: EventView, project_id: uuid.UUID, services: ServicesDep) -> AuditEventOut:
    return AuditEventOut(
        id=event.id,
        action=event.action,
        actor_type=event.actor_type,
        actor=event.actor,
        registry_id=event.registry_id,
        source_address=event.source,
        subject=event.subject,
        project_id=project_id,
        created_at=format_time(event.created_at, services.settings.zone),
    )


@router.get("", response_model=AuditEventList, responses=_ERRORS)
async def list_audit_events(
    project: ProjectDep,
    services: ServicesDep,
    page: Page = 1,
    per_page: PerPage = 25,
) -> Response:
    """The project's audit log, newest first: credentials generated, rotated and revoked,
    registries created, updated and deleted, repositories and tags deleted, failed logins
    with its robots' names or its API tokens.
    Failed logins that name no robot or token of any project are listed to no project."""

    def read() -> EventPage:
        with services.db.read() as session:
            return services.audit.page_in(session, project, page, per_page)

    found = await in_api_thread(services.db, read)
    return json_response(
        AuditEventList(
            audit_events=[_out(event, project, services) for event in found.events],
            meta=PageMeta(page=page, per_page=per_page, total=found.total),
        )
    )
