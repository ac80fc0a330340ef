"""/v1/container_registries/:id/repositories: browse a managed registry, delete tags and
repositories.

A repository's name holds slashes (`<project-id>/team/app`) and is written into the path as
it is: `.../repositories/<project-id>/team/app/tags`. The name matched is the longest one
that leaves a route's suffix (`/tags`, `/tags/<tag>`); the rare repository whose name itself
ends in `/tags` or `/tags/<x>` is reached by encoding its slashes twice (`%252F`, as
Harbor's API wants), which works for every name.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from dockyard.api.deps import ProjectDep, ServicesDep, read_as_caller
from dockyard.api.schemas import (
    KEY_REFUSALS,
    PROJECT_PARAMETER,
    THROTTLED,
    UNAUTHORIZED,
    ErrorBody,
    Page,
    PageMeta,
    PerPage,
    format_time,
    json_response,
    maybe_time,
    not_found,
)
from dockyard.domain.browse import RepositoryPage, RepositorySummary, TagPage, TagSummary

router = APIRouter(prefix="/v1/container_registries", tags=["repositories"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    **KEY_REFUSALS,
    400: {
        "model": ErrorBody,
        "description": "An external registry (only managed ones can be browsed), an invalid "
        "repository name or tag, or page or per_page out of range",
    },
    **UNAUTHORIZED,
    **not_found("No such registry in this project, or no such repository or tag in it"),
    **THROTTLED,
}

Name = Annotated[
    str, Path(description="the repository's full name, <project-id>/<path>, slashes as they are")
]
TagName = Annotated[str, Path(description="a tag of the repository")]


class RepositoryOut(BaseModel):
    name: str = Field(examples=["a1b2c3d4-e5f6-7890-abcd-ef1234567890/team/app"])
    tag_count: int
    size_bytes: int = Field(
        description="distinct blobs linked into the repository plus its manifests, in bytes"
    )
    last_pushed_at: str | None = Field(
        examples=["2025-01-15T10:00:00.000+01:00"],
        description="the newest manifest pushed or tag moved; null before the first manifest",
    )
    created_at: str = Field(examples=["2025-01-15T10:00:00.000+01:00"])

    @classmethod
    def of(cls, summary: RepositorySummary, zone: ZoneInfo) -> RepositoryOut:
        return cls(
            name=summary.name,
            tag_count=summary.tag_count,
            size_bytes=summary.size_bytes,
            last_pushed_at=maybe_time(summary.last_pushed_at, zone),
            created_at=format_time(summary.created_at, zone),
        )


class RepositoryList(BaseModel):
    repositories: list[RepositoryOut]
    storage_used_bytes: int = Field(
        description="the whole registry: every distinct blob of its repositories counted "
        "once, plus every repository's manifests, in bytes"
    )
    meta: PageMeta


class RepositoryEnvelope(BaseModel):
    repository: RepositoryOut


class TagOut(BaseModel):
    name: str = Field(examples=["latest"])
    digest: str = Field(
        examples=["sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"]
    )
    media_type: str | None = Field(examples=["application/vnd.oci.image.manifest.v1+json"])
    size_bytes: int = Field(
        description="the manifest with its config and layers; an index with its child "
        "manifests and their blobs"
    )
    pushed_at: str = Field(
        examples=["2025-01-15T10:00:00.000+01:00"], description="when the tag was last pushed"
    )

    @classmethod
    def of(cls, tag: TagSummary, zone: ZoneInfo) -> TagOut:
        return cls(
            name=tag.name,
            digest=tag.digest,
            media_type=tag.media_type,
            size_bytes=tag.size_bytes,
            pushed_at=format_time(tag.pushed_at, zone),
        )


class TagList(BaseModel):
    repository: RepositoryOut
    tags: list[TagOut]
    meta: PageMeta


class TagEnvelope(BaseModel):
    tag: TagOut


# Routes with a suffix first: `{name:path}` alone would take `<name>/tags` as a name.


@router.get(
    "/{registry_id}/repositories",
    response_model=RepositoryList,
    responses=_ERRORS,
    openapi_extra=PROJECT_PARAMETER,
)
async def list_repositories(
    registry_id: str,
    request: Request,
    services: ServicesDep,
    page: Page = 1,
    per_page: PerPage = 25,
) -> Response:
    """The managed registry's repositories by name, with the storage the registry uses."""

    def read(session: Session, project: uuid.UUID) -> RepositoryPage:
        return services.browse.repositories_in(session, project, registry_id, page, per_page)

    _, found = await read_as_caller(request, read)
    zone = services.settings.zone
    return json_response(
        RepositoryList(
            repositories=[RepositoryOut.of(summary, zone) for summary in found.repositories],
            storage_used_bytes=found.storage_used_bytes,
            meta=PageMeta(page=page, per_page=per_page, total=found.total),
        )
    )


@router.get(
    "/{registry_id}/repositories/{name:path}/tags",
    response_model=TagList,
    responses=_ERRORS,
    openapi_extra=PROJECT_PARAMETER,
)
async def list_tags(
    registry_id: str,
    name: Name,
    request: Request,
    services: ServicesDep,
    page: Page = 1,
    per_page: PerPage = 25,
) -> Response:
    """The repository and its tags by name, each with its digest and size."""

    def read(session: Session, project: uuid.UUID) -> TagPage:
        return services.browse.tags_in(session, project, registry_id, name, page, per_page)

    _, found = await read_as_caller(request, read)
    zone = services.settings.zone
    return json_response(
        TagList(
            repository=RepositoryOut.of(found.repository, zone),
            tags=[TagOut.of(tag, zone) for tag in found.tags],
            meta=PageMeta(page=page, per_page=per_page, total=found.total),
        )
    )


@router.delete("/{registry_id}/repositories/{name:path}/tags/{tag}", responses=_ERRORS)
def delete_tag(
    registry_id: str, name: Name, tag: TagName, project: ProjectDep, services: ServicesDep
) -> TagEnvelope:
    """Remove the tag; answers it as it was. Its manifest stays, pullable by digest, until
    garbage collection removes untagged manifests (`dockyard gc --delete-untagged`)."""
    removed = services.browse.delete_tag(project, registry_id, name, tag)
    return TagEnvelope(tag=TagOut.of(removed, services.settings.zone))


@router.get(
    "/{registry_id}/repositories/{name:path}",
    response_model=RepositoryEnvelope,
    responses=_ERRORS,
    openapi_extra=PROJECT_PARAMETER,
)
async def get_repository(
    registry_id: str, name: Name, request: Request, services: ServicesDep
) -> Response:
    def read(session: Session, project: uuid.UUID) -> RepositorySummary:
        return services.browse.repository_in(session, project, registry_id, name)

    _, found = await read_as_caller(request, read)
    return json_response(
        RepositoryEnvelope(repository=RepositoryOut.of(found, services.settings.zone))
    )


@router.delete("/{registry_id}/repositories/{name:path}", responses=_ERRORS)
def delete_repository(
    registry_id: str, name: Name, project: ProjectDep, services: ServicesDep
) -> RepositoryEnvelope:
    """Remove the repository with its tags, manifests and open uploads; answers it as it
    was. Its blobs no other repository links are freed by the next garbage collection."""
    removed = services.browse.delete_repository(project, registry_id, name)
    return RepositoryEnvelope(repository=RepositoryOut.of(removed, services.settings.zone))
