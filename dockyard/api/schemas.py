"""Request and response shapes of /v1, exactly the fields of the spec's examples."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from starlette.responses import Response

from dockyard.domain.credentials import GeneratedCredentials
from dockyard.domain.registries import RegistryView
from dockyard.domain.registry_fields import MAX_HOSTNAME, MAX_NAME, MAX_PASSWORD, MAX_USERNAME

RegistryType = Literal["nodion", "docker_hub", "ghcr", "custom"]


def json_response(model: BaseModel) -> Response:
    """The model as FastAPI would send it, serialized once: returning the model instead makes
    FastAPI validate it again against the route's response_model before dumping it."""
    return Response(model.model_dump_json(), media_type="application/json")


def format_time(moment: datetime, zone: ZoneInfo) -> str:
    """ISO 8601 with milliseconds and an offset, as the platform writes them."""
    return moment.astimezone(zone).isoformat(timespec="milliseconds")


class ContainerRegistryOut(BaseModel):
    id: uuid.UUID
    status: str = Field(examples=["available"])
    registry_type: RegistryType
    name: str
    hostname: str
    has_credentials: bool
    region_id: uuid.UUID | None
    created_at: str = Field(examples=["2025-01-15T10:00:00.000+01:00"])
    updated_at: str = Field(examples=["2025-01-15T10:00:00.000+01:00"])

    @classmethod
    def of(cls, view: RegistryView, zone: ZoneInfo) -> ContainerRegistryOut:
        return cls(
            id=view.id,
            status=view.status,
            registry_type=view.registry_type,
            name=view.name,
            hostname=view.hostname,
            has_credentials=view.has_credentials,
            region_id=view.region_id,
            created_at=format_time(view.created_at, zone),
            updated_at=format_time(view.updated_at, zone),
        )


class ContainerRegistryEnvelope(BaseModel):
    container_registry: ContainerRegistryOut


class ContainerRegistryList(BaseModel):
    container_registries: list[ContainerRegistryOut]


class CredentialsOut(BaseModel):
    id: uuid.UUID
    hostname: str
    username: str = Field(examples=["robot$project-a1b2c3d4"])
    password: str

    @classmethod
    def of(cls, generated: GeneratedCredentials) -> CredentialsOut:
        return cls(
            id=generated.registry_id,
            hostname=generated.hostname,
            username=generated.username,
            password=generated.password,
        )


class CredentialsEnvelope(BaseModel):
    container_registry: CredentialsOut


class RegionOut(BaseModel):
    id: uuid.UUID
    status: str
    name: str
    slug: str


class RegionList(BaseModel):
    regions: list[RegionOut]


class ErrorBody(BaseModel):
    errors: list[str] = Field(examples=[["Name can't be blank"]])


# Every /v1 route authenticates through deps.py, which throttles bad tokens: a response
# each route documents.
THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorBody,
        "description": "Too many bad API tokens from this address; see Retry-After",
    },
}
# And what deps.py refuses a user API key (dockyard/api/callers.py): every route documents
# these too. A route whose own 404 means something else says both in its description.
KEY_REFUSALS: dict[int | str, dict[str, Any]] = {
    403: {
        "model": ErrorBody,
        "description": "A user API key without the scope this method needs "
        "(read: GET; write: every other method)",
    },
    404: {
        "model": ErrorBody,
        "description": "A user API key's X-Nodion-Project (or, without it, its user's default "
        "project) names no project the key reaches, whether or not it exists",
    },
}
# The header itself, for the routes that read it without a dependency (openapi_extra).
PROJECT_HEADER_DOC = (
    "User API keys only: the id of the project to act for (default: the user's default "
    "project). Project API tokens ignore it."
)
PROJECT_PARAMETER: dict[str, Any] = {
    "parameters": [
        {
            "name": "X-Nodion-Project",
            "in": "header",
            "required": False,
            "description": PROJECT_HEADER_DOC,
            "schema": {"type": "string"},
        }
    ]
}


class RegistryCreate(BaseModel):
    """Documents the body of POST; the handler checks it itself to report every problem."""

    name: str = Field(min_length=1, max_length=MAX_NAME, examples=["My Docker Hub"])
    registry_type: Literal["docker_hub", "ghcr", "custom"]
    hostname: str | None = Field(
        default=None,
        max_length=MAX_HOSTNAME,
        examples=["ghcr.io"],
        description="Host with an optional port. Defaults to docker.io / ghcr.io.",
    )
    username: str | None = Field(default=None, max_length=MAX_USERNAME)
    password: str | None = Field(default=None, max_length=MAX_PASSWORD)


class RegistryUpdate(BaseModel):
    """Documents the body of PATCH: omitted fields keep their value."""

    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    hostname: str | None = Field(default=None, max_length=MAX_HOSTNAME)
    username: str | None = Field(default=None, max_length=MAX_USERNAME)
    password: str | None = Field(default=None, max_length=MAX_PASSWORD)
