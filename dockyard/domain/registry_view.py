"""How a registry is shown, and the columns it is read from: shared by the registry service
and the parts that read registries for it (the list, credentials, checks)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from sqlalchemy import and_, bindparam, select

from dockyard.db.models import ContainerRegistry, RobotAccount
from dockyard.domain.errors import NotFoundError
from dockyard.ids import canonical_uuid


@dataclass(frozen=True)
class RegistryView:
    """A registry as the API shows it; secrets only as `has_credentials`."""

    id: uuid.UUID
    status: str
    registry_type: str
    name: str
    hostname: str
    has_credentials: bool
    region_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    # Set when this change asked for a check of the registry: the token the check is
    # started with (dockyard.verification.Verifier.follow). Not part of the API's shape.
    check_requested_at: datetime | None = None
    # A managed registry's robot's expiry, if its credentials were given one: a stored
    # time, so that a cached list stays right as it passes.
    credentials_expire_at: datetime | None = None


class Shown(Protocol):
    """The columns a view is made of: a ContainerRegistry entity, or a row of LISTING."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def status(self) -> str: ...
    @property
    def registry_type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def hostname(self) -> str | None: ...
    @property
    def region_id(self) -> uuid.UUID | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...


# The list selects columns, not entities: building 50 ORM instances cost 4x the query, and
# the ciphertexts are needed only for whether they are there. Built once: composing a
# select costs about as much as running it.
LISTING = (
    select(
        ContainerRegistry.id,
        ContainerRegistry.status,
        ContainerRegistry.registry_type,
        ContainerRegistry.name,
        ContainerRegistry.hostname,
        ContainerRegistry.region_id,
        ContainerRegistry.created_at,
        ContainerRegistry.updated_at,
        and_(
            ContainerRegistry.username_enc.is_not(None), ContainerRegistry.password_enc.is_not(None)
        ).label("has_secrets"),
        RobotAccount.id.is_not(None).label("has_robot"),
        RobotAccount.expires_at.label("robot_expires_at"),
    )
    .outerjoin(RobotAccount, RobotAccount.registry_id == ContainerRegistry.id)
    .where(ContainerRegistry.project_id == bindparam("project_id"))
    .order_by(ContainerRegistry.created_at, ContainerRegistry.id)
)


class Listed(NamedTuple):
    """A row of LISTING. A Row looks its attributes up by name, at 10x the cost of these."""

    id: uuid.UUID
    status: str
    registry_type: str
    name: str
    hostname: str | None
    region_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    has_secrets: bool
    has_robot: bool
    robot_expires_at: datetime | None


def parse_registry_id(registry_ref: str) -> uuid.UUID:
    """A registry id from a path; anything that is not a UUID names no registry."""
    parsed = canonical_uuid(registry_ref)
    if parsed is None:
        raise NotFoundError("Container registry not found")
    return parsed
