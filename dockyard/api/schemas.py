"""Request and response shapes of /v1, exactly the fields of the spec's examples."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from starlette.responses import Response

from dockyard.domain.browse import MAX_PAGE, MAX_PER_PAGE
from dockyard.domain.credential_terms import (
    DEFAULT_GRACE_SECONDS,
    MAX_EXPIRES_IN,
    MAX_GRACE_SECONDS,
    MIN_EXPIRES_IN,
)
from dockyard.domain.credentials import GeneratedCredentials, RotatedCredentials
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


def maybe_time(moment: datetime | None, zone: ZoneInfo) -> str | None:
    return None if moment is None else format_time(moment, zone)


def _absent(value: object) -> bool:
    return value is None


# Beyond the spec: shown only where credentials were given an expiry, and then left out
# of the answer altogether (not null), so that the spec's shapes stay exactly as they are.
_EXPIRY_FIELD = Field(
    default=None,
    exclude_if=_absent,
    examples=["2025-04-15T10:00:00.000+02:00"],
    description="When the robot's password stops working; only where expires_in was given",
)


class ContainerRegistryOut(BaseModel):
    id: uuid.UUID
    status: str = Field(
        examples=["available"],
        description="available; for external registries also verifying (a check of the "
        "host and credentials is running), authentication_failed or unreachable",
    )
    registry_type: RegistryType
    name: str
    hostname: str
    has_credentials: bool
    region_id: uuid.UUID | None
    created_at: str = Field(examples=["2025-01-15T10:00:00.000+01:00"])
    updated_at: str = Field(examples=["2025-01-15T10:00:00.000+01:00"])
    credentials_expire_at: str | SkipJsonSchema[None] = _EXPIRY_FIELD

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
            credentials_expire_at=maybe_time(view.credentials_expire_at, zone),
        )


class ContainerRegistryEnvelope(BaseModel):
    container_registry: ContainerRegistryOut

    @classmethod
    def of(cls, view: RegistryView, zone: ZoneInfo) -> ContainerRegistryEnvelope:
        return cls(container_registry=ContainerRegistryOut.of(view, zone))


class ContainerRegistryList(BaseModel):
    container_registries: list[ContainerRegistryOut]


class CredentialsOut(BaseModel):
    id: uuid.UUID
    hostname: str
    username: str = Field(examples=["robot$project-a1b2c3d4"])
    password: str
    credentials_expire_at: str | SkipJsonSchema[None] = _EXPIRY_FIELD

    @classmethod
    def of(cls, generated: GeneratedCredentials, zone: ZoneInfo) -> CredentialsOut:
        return cls(
            id=generated.registry_id,
            hostname=generated.hostname,
            username=generated.username,
            password=generated.password,
            credentials_expire_at=maybe_time(generated.expires_at, zone),
        )


class CredentialsEnvelope(BaseModel):
    container_registry: CredentialsOut


class RotatedCredentialsOut(CredentialsOut):
    previous_password_valid_until: str = Field(
        examples=["2025-01-16T10:00:00.000+01:00"],
        description="When the password this one replaced stops working (the grace period's "
        "end; the moment of rotation for grace_period 0)",
    )

    @classmethod
    def of_rotated(cls, rotated: RotatedCredentials, zone: ZoneInfo) -> RotatedCredentialsOut:
        assert rotated.previous_valid_until is not None
        return cls(
            **CredentialsOut.of(rotated, zone).model_dump(),
            previous_password_valid_until=format_time(rotated.previous_valid_until, zone),
        )


class RotatedCredentialsEnvelope(BaseModel):
    container_registry: RotatedCredentialsOut


class RegionOut(BaseModel):
    id: uuid.UUID
    status: str
    name: str
    slug: str


class RegionList(BaseModel):
    regions: list[RegionOut]


# The query of every paginated /v1 list: the bounds the domain's browse.check_page holds.
Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="from 1")]
PerPage = Annotated[int, Query(ge=1, le=MAX_PER_PAGE)]


class PageMeta(BaseModel):
    """Where a page sits in a paginated list (?page=&per_page=, page from 1)."""

    page: int
    per_page: int
    total: int = Field(description="items in the whole list; pages = ceil(total / per_page)")


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
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No, a wrong, a revoked or an expired API token"},
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


def not_found(what: str) -> dict[int | str, dict[str, Any]]:
    """A route's own 404 (`what`), documented with the user API key's 404 it shares."""
    return {
        404: {"model": ErrorBody, "description": f"{what}; or {KEY_REFUSALS[404]['description']}"}
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


class CredentialsCreate(BaseModel):
    """Documents the optional body of POST .../credentials; none is needed."""

    expires_in: int | None = Field(
        default=None,
        ge=MIN_EXPIRES_IN,
        le=MAX_EXPIRES_IN,
        examples=[7776000],
        description="Seconds until the password stops working; left out or null: never",
    )


class CredentialsRotate(BaseModel):
    """Documents the optional body of POST .../credentials/rotate."""

    model_config = ConfigDict(extra="forbid")  # misspelt fields are refused, see parse_rotate

    grace_period: int = Field(
        default=DEFAULT_GRACE_SECONDS,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="Seconds the old password keeps working; 0 stops it at once",
    )
    expires_in: int | None = Field(
        default=None,
        ge=MIN_EXPIRES_IN,
        le=MAX_EXPIRES_IN,
        examples=[7776000],
        description="Seconds until the new password stops working; null: never; left "
        "out: the lifetime the credentials were last given (none, if never)",
    )


class RegistryUpdate(BaseModel):
    """Documents the body of PATCH: omitted fields keep their value."""

    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    hostname: str | None = Field(default=None, max_length=MAX_HOSTNAME)
    username: str | None = Field(default=None, max_length=MAX_USERNAME)
    password: str | None = Field(default=None, max_length=MAX_PASSWORD)
