"""Container registries of a project: the managed one of each region, and external ones."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.config import Region, Settings
from dockyard.db import Database
from dockyard.db.models import ContainerRegistry, RobotAccount, utcnow
from dockyard.domain import audit
from dockyard.domain.audit import Actor
from dockyard.domain.errors import NotFoundError, RefusedError
from dockyard.domain.registry_fields import (
    AVAILABLE,
    KEEP,
    MANAGED_TYPE,
    VERIFYING,
    Keep,
    StoredFields,
    parse_create,
    parse_update,
)
from dockyard.domain.registry_view import (
    LISTING,
    Listed,
    RegistryView,
    Shown,
    parse_registry_id,
)
from dockyard.security import Cipher

__all__ = ["RegistryService", "RegistryView", "parse_registry_id"]


class RegistryService:
    def __init__(self, db: Database, settings: Settings, cipher: Cipher) -> None:
        self.db = db
        self.settings = settings
        self.cipher = cipher

    # -- reading ---------------------------------------------------------------------------

    def list_all(self, project_id: uuid.UUID) -> list[RegistryView]:
        """Managed registries in region order first, then external ones, oldest first."""
        with self.db.read() as session:
            views = self.list_in(session, project_id)
        return self.list_creating_managed(project_id) if views is None else views

    def list_in(self, session: Session, project_id: uuid.UUID) -> list[RegistryView] | None:
        """list_all in the caller's read transaction; None if a configured region's managed
        registry is still to be created: list_creating_managed does that, after it."""
        rows = self._rows(session, project_id)
        return None if self._lacks_managed(rows) else self._order(rows)

    def list_creating_managed(self, project_id: uuid.UUID) -> list[RegistryView]:
        """The list, after creating the managed registries the project lacks (on its first
        list, and after a region was added)."""
        self.ensure_managed(project_id)
        with self.db.read() as session:
            return self._order(self._rows(session, project_id))

    def get(self, project_id: uuid.UUID, registry_ref: str) -> RegistryView:
        with self.db.read() as session:
            return self.get_in(session, project_id, registry_ref)

    def get_in(self, session: Session, project_id: uuid.UUID, registry_ref: str) -> RegistryView:
        """get in the caller's transaction."""
        row, has_robot, expires_at = self._find(session, project_id, registry_ref)
        return self._view(row, has_robot, expires_at)

    def _rows(self, session: Session, project_id: uuid.UUID) -> list[Listed]:
        found = session.connection().execute(LISTING, {"project_id": project_id})
        return [Listed._make(row) for row in found]

    def _lacks_managed(self, rows: Sequence[Listed]) -> bool:
        managed = {row.region_id for row in rows if row.registry_type == MANAGED_TYPE}
        return any(region.region_id not in managed for region in self.settings.effective_regions)

    def _order(self, rows: Sequence[Listed]) -> list[RegistryView]:
        by_region = {row.region_id: row for row in rows if row.registry_type == MANAGED_TYPE}
        listed = [
            by_region[region.region_id]
            for region in self.settings.effective_regions
            if region.region_id in by_region
        ]
        listed.extend(row for row in rows if row.registry_type != MANAGED_TYPE)
        return [
            self._shown(
                row,
                has_robot=row.has_robot,
                has_secrets=row.has_secrets,
                expires_at=row.robot_expires_at,
            )
            for row in listed
        ]

    def _find(
        self, session: Session, project_id: uuid.UUID, registry_ref: str
    ) -> tuple[ContainerRegistry, bool, datetime | None]:
        registry_id = parse_registry_id(registry_ref)
        found = session.execute(
            select(ContainerRegistry, RobotAccount.id.is_not(None), RobotAccount.expires_at)
            .outerjoin(RobotAccount, RobotAccount.registry_id == ContainerRegistry.id)
            .where(ContainerRegistry.id == registry_id, ContainerRegistry.project_id == project_id)
        ).first()
        if found is None:
            raise NotFoundError("Container registry not found")
        row, has_robot, expires_at = found
        if row.registry_type == MANAGED_TYPE and self._region(row) is None:
            # A region taken out of the settings: its registry is no longer served.
            raise NotFoundError("Container registry not found")
        return row, bool(has_robot), expires_at

    def _region(self, row: Shown) -> Region | None:
        return None if row.region_id is None else self.settings.region_by_id(row.region_id)

    def _view(
        self,
        row: ContainerRegistry,
        has_robot: bool,
        expires_at: datetime | None = None,
        *,
        asked: datetime | None = None,
    ) -> RegistryView:
        has_secrets = row.username_enc is not None and row.password_enc is not None
        view = self._shown(row, has_robot=has_robot, has_secrets=has_secrets, expires_at=expires_at)
        return view if asked is None else replace(view, check_requested_at=asked)

    def _shown(
        self,
        row: Shown,
        *,
        has_robot: bool,
        has_secrets: bool,
        expires_at: datetime | None = None,
    ) -> RegistryView:
        if row.registry_type == MANAGED_TYPE:
            region = self._region(row)
            assert region is not None  # callers drop rows of unknown regions
            name = f"{self.settings.platform_name} Registry ({region.name})"
            hostname = self.settings.region_hostname(region)
            has_credentials = has_robot
        else:
            name, hostname = row.name, row.hostname or ""
            has_credentials = has_secrets
        return RegistryView(
            id=row.id,
            status=row.status,
            registry_type=row.registry_type,
            name=name,
            hostname=hostname,
            has_credentials=bool(has_credentials),
            region_id=row.region_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            credentials_expire_at=expires_at,
        )

    # -- managed registries ------------------------------------------------------------------

    def ensure_managed(self, project_id: uuid.UUID) -> None:
        """Create the managed registry of every configured region the project lacks."""
        try:
            with self.db.write() as session:
                self.ensure_managed_in(session, project_id)
        except IntegrityError:
            pass  # a concurrent request created them; the unique index kept one of each

    def ensure_managed_in(self, session: Session, project_id: uuid.UUID) -> None:
        existing = set(
            session.scalars(
                select(ContainerRegistry.region_id).where(
                    ContainerRegistry.project_id == project_id,
                    ContainerRegistry.registry_type == MANAGED_TYPE,
                )
            )
        )
        now = utcnow()
        for region in self.settings.effective_regions:
            if region.region_id in existing:
                continue
            session.add(
                ContainerRegistry(
                    project_id=project_id,
                    registry_type=MANAGED_TYPE,
                    name=f"{self.settings.platform_name} Registry ({region.name})",
                    region_id=region.region_id,
                    status=AVAILABLE,
                    created_at=now,
                    updated_at=now,
                )
            )
        session.flush()

    # -- external registries -----------------------------------------------------------------

    # Each change writes its audit event in its own transaction; `actor` defaults to the
    # caller /v1 authenticated (audit.current_actor).

    def create(
        self, project_id: uuid.UUID, fields: Mapping[str, Any], actor: Actor | None = None
    ) -> RegistryView:
        checked = parse_create(fields, self.settings.platform_name)
        with self.db.write() as session:
            now = utcnow()
            row = ContainerRegistry(
                id=uuid.uuid4(),
                project_id=project_id,
                registry_type=checked.registry_type,
                name=checked.name,
                hostname=checked.hostname,
                region_id=None,
                created_at=now,
                updated_at=now,
            )
            row.username_enc = self._seal(row.id, "username", checked.username)
            row.password_enc = self._seal(row.id, "password", checked.password)
            self._ask_for_check(row, now)
            session.add(row)
            audit.record(
                session, project_id, audit.REGISTRY_CREATED, registry_id=row.id, actor=actor
            )
            session.flush()
            return self._view(row, False, asked=row.verification_started_at)

    def update(
        self,
        project_id: uuid.UUID,
        registry_ref: str,
        fields: Mapping[str, Any],
        actor: Actor | None = None,
    ) -> RegistryView:
        with self.db.write() as session:
            row, _, _ = self._find(session, project_id, registry_ref)
            self._refuse_managed(row, "updated")
            change = parse_update(
                fields,
                StoredFields(
                    name=row.name,
                    registry_type=row.registry_type,
                    hostname=row.hostname or "",
                    has_username=row.username_enc is not None,
                    has_password=row.password_enc is not None,
                ),
            )
            # What a check depends on; a new name alone is not checked again. Credentials
            # sent again count as changed: they are not decrypted to be compared.
            recheck = (
                change.hostname != row.hostname
                or change.username is not KEEP
                or change.password is not KEEP
            )
            row.name = change.name
            row.hostname = change.hostname
            if change.username is not KEEP:
                row.username_enc = self._seal(row.id, "username", change.username)
            if change.password is not KEEP:
                row.password_enc = self._seal(row.id, "password", change.password)
            row.updated_at = utcnow()
            asked = None
            if recheck:
                asked = self._ask_for_check(row, row.updated_at)
            audit.record(
                session, project_id, audit.REGISTRY_UPDATED, registry_id=row.id, actor=actor
            )
            session.flush()
            return self._view(row, False, asked=asked)

    def request_check(self, project_id: uuid.UUID, registry_ref: str) -> RegistryView:
        """POST .../verify: the registry in state `verifying`, its check asked for. One that
        is being checked already (and not for so long that its check is taken for lost)
        stays as it is: a repeated request must not start a check per call."""
        with self.db.write() as session:
            row, _, _ = self._find(session, project_id, registry_ref)
            if row.registry_type == MANAGED_TYPE:
                raise RefusedError(
                    f"{self.settings.platform_name} registries are managed by the platform and "
                    "always available; only external registries (docker_hub, ghcr, custom) "
                    "are checked"
                )
            if not self.settings.verify_registries:
                raise RefusedError(
                    "Checking external registries is turned off on this server "
                    "(DOCKYARD_VERIFY_REGISTRIES=false); their status is not checked"
                )
            now = utcnow()
            started = row.verification_started_at
            if (
                row.status == VERIFYING
                and started is not None
                and (now - started).total_seconds() < self.settings.verify_stale_seconds
            ):
                return self._view(row, False)
            self._ask_for_check(row, now)
            session.flush()
            return self._view(row, False, asked=now)

    def _ask_for_check(self, row: ContainerRegistry, now: datetime) -> datetime | None:
        """Mark the registry for a check, or, with checks turned off, as never checked."""
        if not self.settings.verify_registries:
            row.status, row.verification_started_at = AVAILABLE, None
            return None
        row.status, row.verification_started_at = VERIFYING, now
        return now

    def delete(
        self, project_id: uuid.UUID, registry_ref: str, actor: Actor | None = None
    ) -> RegistryView:
        with self.db.write() as session:
            row, _, _ = self._find(session, project_id, registry_ref)
            self._refuse_managed(row, "deleted")
            view = self._view(row, False)
            session.delete(row)
            audit.record(
                session, project_id, audit.REGISTRY_DELETED, registry_id=row.id, actor=actor
            )
            return view

    def _refuse_managed(self, row: ContainerRegistry, verb: str) -> None:
        if row.registry_type == MANAGED_TYPE:
            raise RefusedError(
                f"{self.settings.platform_name} registries are managed by the platform and "
                f"can't be {verb}; only external registries (docker_hub, ghcr, custom) can"
            )

    def _seal(self, registry_id: uuid.UUID, field: str, value: str | Keep | None) -> str | None:
        if value is None or value is KEEP:
            return None
        return self.cipher.encrypt(value, f"container_registry:{registry_id}:{field}")

    def open_credentials(self, row: ContainerRegistry) -> tuple[str, str] | None:
        """The stored username and password of an external registry, decrypted."""
        if row.username_enc is None or row.password_enc is None:
            return None
        return (
            self.cipher.decrypt(row.username_enc, f"container_registry:{row.id}:username"),
            self.cipher.decrypt(row.password_enc, f"container_registry:{row.id}:password"),
        )
