"""Upload sessions in the database: where each upload stands, so any process can go on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select, update

from dockyard.db import Database
from dockyard.db.models import Repository, Upload, utcnow
from dockyard.domain.repositories import RepoRef
from dockyard.registry.errors import RegistryError


@dataclass(frozen=True)
class UploadState:
    id: uuid.UUID
    repository_id: uuid.UUID
    size: int
    started_at: datetime


def _state(row: Upload) -> UploadState:
    return UploadState(row.id, row.repository_id, row.size, row.started_at)


def unclaimed(now: datetime) -> ColumnElement[bool]:
    """Uploads no writer holds at `now`: never claimed, released, or the claim expired."""
    return Upload.claimed_until.is_(None) | (Upload.claimed_until < now)


def parse_upload_id(upload_ref: str) -> uuid.UUID:
    """The upload id of a URL, or BLOB_UPLOAD_UNKNOWN."""
    try:
        return uuid.UUID(upload_ref)
    except ValueError:
        raise RegistryError("BLOB_UPLOAD_UNKNOWN") from None


class UploadService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def start(self, repo: RepoRef) -> UploadState:
        upload = UploadState(uuid.uuid4(), repo.id, 0, utcnow())
        with self.db.write_connection() as connection:
            connection.execute(
                insert(Upload).values(
                    id=upload.id,
                    repository_id=repo.id,
                    region_id=repo.region_id,
                    size=0,
                    started_at=upload.started_at,
                    updated_at=upload.started_at,
                )
            )
        return upload

    def count_open(self, repo: RepoRef, ttl: timedelta) -> int:
        """The repository's upload sessions that garbage collection would not yet expire."""
        return self._count_open(ttl, Upload.repository_id == repo.id)

    def find(
        self, region_id: uuid.UUID, name: str, upload_id: uuid.UUID
    ) -> tuple[RepoRef, UploadState]:
        """The repository and its upload, in one read; BLOB_UPLOAD_UNKNOWN if either is
        missing (every chunk of a push starts here)."""
        with self.db.read_connection() as session:
            row = session.execute(
                select(
                    Repository.id,
                    Repository.project_id,
                    Upload.size,
                    Upload.started_at,
                )
                .join(Upload, Upload.repository_id == Repository.id)
                .where(
                    Repository.region_id == region_id,
                    Repository.name == name,
                    Upload.id == upload_id,
                )
            ).one_or_none()
        if row is None:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN")
        repo = RepoRef(row.id, row.project_id, region_id, name)
        return repo, UploadState(upload_id, row.id, row.size, row.started_at)

    def claim(self, upload: UploadState, holder: str, seconds: float) -> bool:
        """Become the one writer of the upload at its current size, for `seconds`.

        False when another writer holds it or the upload moved on: across replicas, two
        chunks must never be written to storage at the same time.
        """
        now = utcnow()
        claimed = self._update(
            Upload.id == upload.id,
            Upload.size == upload.size,
            unclaimed(now),
            claimed_by=holder,
            claimed_until=now + timedelta(seconds=seconds),
        )
        return bool(claimed)

    def renew(self, upload: UploadState, holder: str, seconds: float) -> bool:
        renewed = self._update(
            Upload.id == upload.id,
            Upload.claimed_by == holder,
            claimed_until=utcnow() + timedelta(seconds=seconds),
        )
        return bool(renewed)

    def release(self, upload: UploadState, holder: str) -> None:
        self._update(
            Upload.id == upload.id,
            Upload.claimed_by == holder,
            claimed_by=None,
            claimed_until=None,
        )

    def advance(self, upload: UploadState, new_size: int, holder: str) -> bool:
        """Record the new size and let go of the claim, if the claim is still ours."""
        advanced = self._update(
            Upload.id == upload.id,
            Upload.size == upload.size,
            Upload.claimed_by == holder,
            size=new_size,
            updated_at=utcnow(),
            claimed_by=None,
            claimed_until=None,
        )
        return bool(advanced)

    def count_all_open(self, ttl: timedelta) -> int:
        """Upload sessions of every repository that garbage collection would not yet expire."""
        return self._count_open(ttl)

    def _count_open(self, ttl: timedelta, *where: ColumnElement[bool]) -> int:
        fresh = Upload.updated_at >= utcnow() - ttl
        with self.db.read_connection() as session:
            found = session.scalar(select(func.count()).select_from(Upload).where(*where, fresh))
        return int(found or 0)

    def release_every_claim(self) -> int:
        """Let go of every claim: for a server that starts on a database only it uses (SQLite),
        any claim left is one a killed process held, and waiting for it to expire would make
        a client's resumed upload fail (416) for up to a minute."""
        return self._update(Upload.claimed_by.is_not(None), claimed_by=None, claimed_until=None)

    def _update(self, *where: ColumnElement[bool], **values: Any) -> int:
        """UPDATE the uploads `where` holds, in a transaction of its own; the rows matched."""
        with self.db.write_connection() as session:
            result = session.execute(update(Upload).where(*where).values(**values))
            return int(getattr(result, "rowcount", 0))

    def forget(self, upload_id: uuid.UUID) -> None:
        with self.db.write_connection() as session:
            session.execute(delete(Upload).where(Upload.id == upload_id))
