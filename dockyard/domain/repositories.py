"""Repositories and what is linked into them: blobs, tags, the catalog."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, Select, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from dockyard.db import Database
from dockyard.db.models import Blob, Repository, RepositoryBlob, Tag, Upload, utcnow
from dockyard.db.upsert import upsert
from dockyard.registry.errors import RegistryError


@dataclass(frozen=True)
class RepoRef:
    id: uuid.UUID
    project_id: uuid.UUID
    region_id: uuid.UUID
    name: str


def find_repository(
    session: Session | Connection, region_id: uuid.UUID, name: str
) -> RepoRef | None:
    # Columns, not an ORM object: every registry request starts here.
    row = session.execute(
        select(Repository.id, Repository.project_id).where(
            Repository.region_id == region_id, Repository.name == name
        )
    ).one_or_none()
    return None if row is None else RepoRef(row.id, row.project_id, region_id, name)


class RepositoryService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, region_id: uuid.UUID, name: str) -> RepoRef:
        """The repository, or NAME_UNKNOWN."""
        with self.db.read_connection() as session:
            repo = find_repository(session, region_id, name)
        if repo is None:
            raise RegistryError("NAME_UNKNOWN", detail={"name": name})
        return repo

    def get_or_create(self, region_id: uuid.UUID, project_id: uuid.UUID, name: str) -> RepoRef:
        with self.db.read_connection() as session:
            repo = find_repository(session, region_id, name)
        if repo is not None:
            return repo
        repo = RepoRef(uuid.uuid4(), project_id, region_id, name)
        try:
            with self.db.write_connection() as connection:
                connection.execute(
                    insert(Repository).values(
                        id=repo.id, project_id=project_id, region_id=region_id, name=name
                    )
                )
            return repo
        except IntegrityError:
            return self.get(region_id, name)  # a concurrent push created it

    # -- blobs -------------------------------------------------------------------------------

    def blob_size(self, repo: RepoRef, digest: str) -> int | None:
        """The size of a blob readable through this repository, else None."""
        with self.db.read_connection() as session:
            return session.scalar(
                select(Blob.size)
                .join(RepositoryBlob, RepositoryBlob.digest == Blob.digest)
                .where(
                    RepositoryBlob.repository_id == repo.id,
                    RepositoryBlob.digest == digest,
                    Blob.region_id == repo.region_id,
                )
            )

    def blob_size_in(self, region_id: uuid.UUID, name: str, digest: str) -> int | None:
        """blob_size, by the repository's name: one query for a HEAD or GET of a blob."""
        with self.db.read_connection() as session:
            return session.scalar(
                select(Blob.size)
                .join(RepositoryBlob, RepositoryBlob.digest == Blob.digest)
                .join(Repository, Repository.id == RepositoryBlob.repository_id)
                .where(
                    Repository.region_id == region_id,
                    Repository.name == name,
                    RepositoryBlob.digest == digest,
                    Blob.region_id == region_id,
                )
            )

    def reserve_blob(self, region_id: uuid.UUID, digest: str, size: int) -> None:
        """Before a finished upload is moved into place: make the blob's row fresh.

        Garbage collection locks a blob's row and re-checks its age before deleting the
        object, so a blob being stored now is never collected underneath its upload.
        """
        with self.db.write_connection() as session:
            # On PostgreSQL the conflict locks the row as FOR UPDATE would.
            upsert(
                session,
                Blob,
                {"region_id": region_id, "digest": digest, "size": size, "created_at": utcnow()},
                keys=("region_id", "digest"),
                refresh=("created_at",),
            )

    def link_blob(
        self, repo: RepoRef, digest: str, finished_upload: uuid.UUID | None = None
    ) -> bool:
        """Make a stored blob readable through `repo`; False when the region lacks it.

        `finished_upload`, the upload the blob came from, is forgotten in the same
        transaction (one commit less for every pushed layer)."""
        with self.db.write_connection() as session:
            if finished_upload is not None:
                session.execute(delete(Upload).where(Upload.id == finished_upload))
            # FOR SHARE: a collection deciding about this blob waits for the link to exist.
            blob = session.scalar(
                select(Blob.digest)
                .where(Blob.region_id == repo.region_id, Blob.digest == digest)
                .with_for_update(read=True)
            )
            if blob is None:
                return False
            self._link(session, repo, digest)
            return True

    @staticmethod
    def _link(connection: Connection, repo: RepoRef, digest: str) -> None:
        # A fresh link restarts the blob's grace period against garbage collection.
        upsert(
            connection,
            RepositoryBlob,
            {"repository_id": repo.id, "digest": digest, "created_at": utcnow()},
            keys=("repository_id", "digest"),
            refresh=("created_at",),
        )

    def unlink_blob(self, repo: RepoRef, digest: str) -> bool:
        with self.db.write_connection() as session:
            result = session.execute(
                delete(RepositoryBlob).where(
                    RepositoryBlob.repository_id == repo.id, RepositoryBlob.digest == digest
                )
            )
            return bool(getattr(result, "rowcount", 0))

    # -- tags and the catalog ------------------------------------------------------------------

    def tags(self, repo: RepoRef, limit: int | None, last: str | None) -> tuple[list[str], bool]:
        """Tags in lexical order after `last`; and whether more follow."""
        return self._page(
            select(Tag.name).where(Tag.repository_id == repo.id), Tag.name, limit, last
        )

    def catalog(
        self, project_id: uuid.UUID, region_id: uuid.UUID, limit: int | None, last: str | None
    ) -> tuple[list[str], bool]:
        """The project's repositories in the region, in lexical order after `last`."""
        return self._page(
            select(Repository.name).where(
                Repository.project_id == project_id, Repository.region_id == region_id
            ),
            Repository.name,
            limit,
            last,
        )

    def _page(
        self,
        query: Select[str],
        column: InstrumentedAttribute[str],
        limit: int | None,
        last: str | None,
    ) -> tuple[list[str], bool]:
        query = query.order_by(column)
        if last:
            query = query.where(column > last)
        if limit is not None:
            query = query.limit(limit + 1)  # one more tells whether another page follows
        with self.db.read_connection() as session:
            names = list(session.scalars(query))
        if limit is not None and len(names) > limit:
            return names[:limit], True
        return names, False
