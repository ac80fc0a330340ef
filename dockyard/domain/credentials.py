"""Robot accounts: the push/pull credentials of a managed registry."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.db import Database
from dockyard.db.models import ContainerRegistry, RobotAccount, utcnow
from dockyard.domain import audit
from dockyard.domain.audit import Actor
from dockyard.domain.errors import RefusedError
from dockyard.domain.registries import RegistryService, RegistryView
from dockyard.domain.registry_fields import MANAGED_TYPE
from dockyard.security import SecretHasher, new_robot_secret

# A random 8-hex username collides with an existing one once in ~4 billion; a handful of
# attempts makes a failure here practically impossible rather than merely unlikely.
_USERNAME_ATTEMPTS = 5


@dataclass(frozen=True)
class GeneratedCredentials:
    registry_id: uuid.UUID
    hostname: str
    username: str
    password: str


class CredentialService:
    def __init__(self, registries: RegistryService, hasher: SecretHasher) -> None:
        self.registries = registries
        self.hasher = hasher

    @property
    def _platform(self) -> str:
        return self.registries.settings.platform_name

    def _username(self, registry_id: uuid.UUID, attempt: int) -> str:
        # The first choice is the registry id's first 8 hex digits, as in the spec's example.
        tag = registry_id.hex[:8] if attempt == 0 else secrets.token_hex(4)
        return f"{self.registries.settings.robot_prefix}project-{tag}"

    def _already(self) -> RefusedError:
        return RefusedError(
            "Credentials already exist for this registry; they are shown only once. "
            "Delete them (DELETE /v1/container_registries/:id/credentials) to generate new ones"
        )

    def _managed(self, project_id: uuid.UUID, registry_ref: str, verb: str) -> RegistryView:
        view = self.registries.get(project_id, registry_ref)
        if view.registry_type != MANAGED_TYPE:
            raise RefusedError(
                f"Credentials can only be {verb} for {self._platform} registries; "
                f"this is an external {view.registry_type} registry, whose credentials you "
                "set with PATCH /v1/container_registries/:id"
            )
        return view

    def generate(
        self, project_id: uuid.UUID, registry_ref: str, actor: Actor | None = None
    ) -> GeneratedCredentials:
        """A robot for a managed registry; its audit event is written in its transaction
        (`actor` defaults to the caller /v1 authenticated), naming the registry only."""
        view = self._managed(project_id, registry_ref, "generated")
        if view.has_credentials:
            raise self._already()
        password = new_robot_secret()
        # argon2 is slow on purpose: hash before the transaction, never inside it.
        secret_hash = self.hasher.hash(password)
        assert view.region_id is not None
        for attempt in range(_USERNAME_ATTEMPTS):
            username = self._username(view.id, attempt)
            try:
                with self.registries.db.write() as session:
                    session.add(
                        RobotAccount(
                            registry_id=view.id,
                            project_id=project_id,
                            region_id=view.region_id,
                            username=username,
                            secret_hash=secret_hash,
                        )
                    )
                    session.flush()
                    self._touch(session, view.id)
                    audit.record(
                        session,
                        project_id,
                        audit.CREDENTIALS_GENERATED,
                        registry_id=view.id,
                        actor=actor,
                    )
            except IntegrityError:
                # Either a concurrent call won the registry's one robot (the unique
                # registry_id), or the username is taken: tell them apart by looking.
                if self.registries.get(project_id, registry_ref).has_credentials:
                    raise self._already() from None
                continue
            return GeneratedCredentials(view.id, view.hostname, username, password)
        raise RefusedError("Could not pick a free robot username; please try again")

    def revoke(
        self, project_id: uuid.UUID, registry_ref: str, actor: Actor | None = None
    ) -> RegistryView:
        view = self._managed(project_id, registry_ref, "deleted")
        if not view.has_credentials:
            raise RefusedError("This registry has no credentials to delete")
        with self.registries.db.write() as session:
            session.execute(delete(RobotAccount).where(RobotAccount.registry_id == view.id))
            self._touch(session, view.id)
            audit.record(
                session, project_id, audit.CREDENTIALS_REVOKED, registry_id=view.id, actor=actor
            )
        return self.registries.get(project_id, registry_ref)

    def _touch(self, session: Session, registry_id: uuid.UUID) -> None:
        session.execute(
            update(ContainerRegistry)
            .where(ContainerRegistry.id == registry_id)
            .values(updated_at=utcnow())
        )


@dataclass(frozen=True)
class RobotIdentity:
    id: uuid.UUID
    username: str
    project_id: uuid.UUID
    region_id: uuid.UUID


class RobotDirectory:
    """Who a robot is, whether its password is right, and whether it still exists."""

    def __init__(self, db: Database, hasher: SecretHasher) -> None:
        self.db = db
        self.hasher = hasher
        # Checked against when a username is unknown, so that a wrong name costs the same
        # time as a wrong password and does not reveal which robots exist.
        self._decoy = hasher.hash(new_robot_secret())

    def authenticate(self, username: str, password: str) -> RobotIdentity | None:
        with self.db.read() as session:
            row = session.scalar(select(RobotAccount).where(RobotAccount.username == username))
            identity = (
                None
                if row is None
                else RobotIdentity(row.id, row.username, row.project_id, row.region_id)
            )
            stored = self._decoy if row is None else row.secret_hash
        if not self.hasher.verify(stored, password) or identity is None:
            return None
        return identity

    def find(self, robot_id: uuid.UUID) -> RobotIdentity | None:
        with self.db.read() as session:
            row = session.get(RobotAccount, robot_id)
            if row is None:
                return None
            return RobotIdentity(row.id, row.username, row.project_id, row.region_id)
