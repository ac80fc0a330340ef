"""Robot accounts: the push/pull credentials of a managed registry."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute, Session

from dockyard.db import Database
from dockyard.db.models import ContainerRegistry, RobotAccount, utcnow
from dockyard.domain import audit
from dockyard.domain.audit import Actor
from dockyard.domain.credential_terms import SAME_LIFETIME, parse_generate, parse_rotate
from dockyard.domain.errors import RefusedError
from dockyard.domain.registries import RegistryService, RegistryView
from dockyard.domain.registry_fields import MANAGED_TYPE
from dockyard.domain.robot_secrets import Clock, current_good, holds, previous_good, secret_id
from dockyard.security import SecretHasher, new_robot_secret

# A random 8-hex username collides with an existing one once in ~4 billion; a handful of
# attempts makes a failure here practically impossible rather than merely unlikely.
_USERNAME_ATTEMPTS = 5
log = logging.getLogger("dockyard.credentials")


@dataclass(frozen=True)
class GeneratedCredentials:
    registry_id: uuid.UUID
    hostname: str
    username: str
    password: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class RotatedCredentials(GeneratedCredentials):
    # When the password this one replaced stops working (the past, or now, when it
    # already has: grace period 0, or it had expired).
    previous_valid_until: datetime | None = None


class CredentialService:
    def __init__(
        self, registries: RegistryService, hasher: SecretHasher, now: Clock = utcnow
    ) -> None:
        self.registries = registries
        self.hasher = hasher
        self.now = now

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
            "Rotate them for a new password (POST /v1/container_registries/:id/credentials/"
            "rotate), or delete them (DELETE /v1/container_registries/:id/credentials) to "
            "generate new ones"
        )

    def _none_to(self, verb: str) -> RefusedError:
        return RefusedError(
            f"This registry has no credentials to {verb}; generate them with "
            "POST /v1/container_registries/:id/credentials"
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
        self,
        project_id: uuid.UUID,
        registry_ref: str,
        fields: Mapping[str, Any] | None = None,
        actor: Actor | None = None,
    ) -> GeneratedCredentials:
        """A robot for a managed registry, expiring after `expires_in` seconds if given; its
        audit event is written in its transaction (`actor` defaults to the caller /v1
        authenticated), naming the registry only."""
        view = self._managed(project_id, registry_ref, "generated")
        lifetime = parse_generate(fields or {})
        if view.has_credentials:
            raise self._already()
        password = new_robot_secret()
        secret_hash = self.hasher.hash(password)
        assert view.region_id is not None
        for attempt in range(_USERNAME_ATTEMPTS):
            username = self._username(view.id, attempt)
            expires_at = None if lifetime is None else self.now() + timedelta(seconds=lifetime)
            try:
                with self.registries.db.write() as session:
                    session.add(
                        RobotAccount(
                            registry_id=view.id,
                            project_id=project_id,
                            region_id=view.region_id,
                            username=username,
                            secret_hash=secret_hash,
                            expires_at=expires_at,
                            lifetime_seconds=lifetime,
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
            return GeneratedCredentials(view.id, view.hostname, username, password, expires_at)
        raise RefusedError("Could not pick a free robot username; please try again")

    def rotate(
        self,
        project_id: uuid.UUID,
        registry_ref: str,
        fields: Mapping[str, Any] | None = None,
        actor: Actor | None = None,
    ) -> RotatedCredentials:
        """A new password for the same robot. The current one becomes the previous one,
        good for `grace_period` more seconds (never beyond its own expiry); the one that
        was previous before stops at once, so at most two are ever good. The new password
        gets `expires_in` if given (null: none), else the lifetime the credentials had."""
        view = self._managed(project_id, registry_ref, "rotated")
        terms = parse_rotate(fields or {})
        if not view.has_credentials:
            raise self._none_to("rotate")
        password = new_robot_secret()
        secret_hash = self.hasher.hash(password)
        with self.registries.db.write() as session:
            # FOR UPDATE: two rotations at once on PostgreSQL must not both demote the same
            # secret, losing the first one's new password (SQLite writers queue anyway).
            robot = session.scalar(
                select(RobotAccount).where(RobotAccount.registry_id == view.id).with_for_update()
            )
            if robot is None:  # revoked in the meantime
                raise self._none_to("rotate")
            now = self.now()
            old_until = now + timedelta(seconds=terms.grace_seconds)
            if robot.expires_at is not None:
                old_until = min(old_until, robot.expires_at)
            lifetime = robot.lifetime_seconds if terms.lifetime is SAME_LIFETIME else terms.lifetime
            robot.previous_secret_hash = robot.secret_hash
            robot.previous_valid_until = old_until
            robot.secret_hash = secret_hash
            robot.lifetime_seconds = lifetime
            robot.expires_at = None if lifetime is None else now + timedelta(seconds=lifetime)
            self._touch(session, view.id)
            audit.record(
                session, project_id, audit.CREDENTIALS_ROTATED, registry_id=view.id, actor=actor
            )
            return RotatedCredentials(
                view.id,
                view.hostname,
                robot.username,
                password,
                robot.expires_at,
                robot.previous_valid_until,
            )

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
    # Which of its secrets it proved, or a token it holds names (robot_secrets.secret_id).
    secret_id: str | None = None


@dataclass(frozen=True)
class _RobotRow:
    """The columns a login and a standing check read (robot_secrets.SecretColumns)."""

    id: uuid.UUID
    username: str
    project_id: uuid.UUID
    region_id: uuid.UUID
    secret_hash: str
    expires_at: datetime | None
    previous_secret_hash: str | None
    previous_valid_until: datetime | None


_ROBOT_COLUMNS = select(
    RobotAccount.id,
    RobotAccount.username,
    RobotAccount.project_id,
    RobotAccount.region_id,
    RobotAccount.secret_hash,
    RobotAccount.expires_at,
    RobotAccount.previous_secret_hash,
    RobotAccount.previous_valid_until,
)


class RobotDirectory:
    """Who a robot is, whether its password is right, and whether it still exists."""

    def __init__(self, db: Database, hasher: SecretHasher, now: Clock = utcnow) -> None:
        self.db = db
        self.hasher = hasher
        self.now = now
        # Checked against when a username is unknown, so that a wrong name costs the same
        # time as a wrong password and does not reveal which robots exist.
        self._decoy = hasher.hash(new_robot_secret())

    def _row(self, where: ColumnElement[bool]) -> _RobotRow | None:
        # Columns on a bare connection, not an ORM object: every login and standing check
        # reads this row, and a session costs twice the query itself.
        with self.db.read_connection() as connection:
            row = connection.execute(_ROBOT_COLUMNS.where(where)).one_or_none()
        return None if row is None else _RobotRow(*row)

    def authenticate(self, username: str, password: str) -> RobotIdentity | None:
        """The robot, if `password` is its current secret and that has not expired, or its
        previous one within the grace period. An expired or superseded secret fails like a
        wrong one. A secret proven against an argon2 hash gets its digest stored instead."""
        row = self._row(RobotAccount.username == username)
        if row is None:
            self.hasher.verify(self._decoy, password)
            return None
        now = self.now()
        candidates: list[tuple[str, InstrumentedAttribute[Any]]] = [
            (row.secret_hash, RobotAccount.secret_hash)
        ]
        if previous_good(row, now):
            assert row.previous_secret_hash is not None
            candidates.append((row.previous_secret_hash, RobotAccount.previous_secret_hash))
        # Digests before argon2 hashes: a consumer still on a (digested) previous secret
        # must not pay a failed argon2 check of a current one on every login. At most one
        # candidate matches, so the order changes no answer.
        candidates.sort(key=lambda candidate: self.hasher.outdated(candidate[0]))
        for stored, column in candidates:
            if not self.hasher.verify(stored, password):
                continue
            if column is RobotAccount.secret_hash and not current_good(row, now):
                return None
            if self.hasher.outdated(stored):
                self._upgrade(row.id, column, stored, password)
            return RobotIdentity(
                row.id, row.username, row.project_id, row.region_id, secret_id(stored)
            )
        return None

    def _upgrade(
        self, robot_id: uuid.UUID, column: InstrumentedAttribute[Any], stored: str, password: str
    ) -> None:
        """Replace a proven argon2 hash by the digest of the same secret, under the same
        secret id. Only if the column still holds that hash: a rotation in the meantime
        has moved it, and wins."""
        digest = self.hasher.hash(password, carried_id=secret_id(stored))
        try:
            with self.db.write_connection() as connection:
                connection.execute(
                    update(RobotAccount)
                    .where(RobotAccount.id == robot_id, column == stored)
                    .values({column.key: digest})
                )
        except SQLAlchemyError:
            # The login stands; the next one tries again.
            log.warning("could not store the new digest of robot %s's secret", robot_id)

    def find(self, robot_id: uuid.UUID, secret: str | None) -> RobotIdentity | None:
        """The robot, if it exists and the secret a token of it names is still good."""
        row = self._row(RobotAccount.id == robot_id)
        if row is None or not holds(row, secret, self.now()):
            return None
        return RobotIdentity(row.id, row.username, row.project_id, row.region_id, secret)
