"""What `dockyard fsck --repair` does about each problem it found, and says it did.

Pushes and garbage collection went on since the problem was found: a repair of rows looks
again, under the lock it takes or in the statement it runs, and acts only on what is still
wrong.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from anyio.from_thread import BlockingPortal
from sqlalchemy import and_, delete, exists, insert, select
from sqlalchemy.exc import IntegrityError

from dockyard.db import Database
from dockyard.db.models import (
    Blob,
    Manifest,
    ManifestReference,
    Repository,
    RepositoryBlob,
    Tag,
    utcnow,
)
from dockyard.storage.base import BlobStore
from dockyard.storage.paths import blob_key


def blobless(region: Any, digest: Any) -> Any:
    """The region has no blob row of `digest`: a check finds links with it, and its repair
    deletes only those it still holds for."""
    return ~exists().where(Blob.region_id == region, Blob.digest == digest)


def manifestless(repository: Any, digest: Any) -> Any:
    """The repository has no manifest `digest`: found with and deleted under, like blobless."""
    return ~exists().where(Manifest.repository_id == repository, Manifest.digest == digest)


class Repairs:
    def __init__(
        self,
        db: Database,
        stores: Mapping[uuid.UUID, BlobStore],
        old: datetime,
        portal: BlockingPortal,
    ) -> None:
        self.db, self.stores, self.portal = db, stores, portal
        self.old = old  # what changed before this is not in flight

    def drop_blob(self, region: uuid.UUID, digest: str) -> str:
        """Delete a blob's object, row and links, so that the next push stores it anew."""
        with self.db.write() as session:
            # Locked as the collector locks it: a push reserving this blob waits for us.
            row = session.get(Blob, (region, digest), with_for_update=True)
            if row is None:
                return "nothing: it is gone already"
            if row.created_at > self.old:
                return "nothing: a push is storing it again right now"
            self.portal.call(self.stores[region].delete, blob_key(digest))
            repositories = select(Repository.id).where(Repository.region_id == region)
            links = session.execute(
                delete(RepositoryBlob).where(
                    RepositoryBlob.digest == digest, RepositoryBlob.repository_id.in_(repositories)
                )
            )
            session.delete(row)
        count = getattr(links, "rowcount", 0)
        return f"deleted the object, the row and {count} link(s): push it again"

    def resize_blob(self, region: uuid.UUID, digest: str, length: int) -> str:
        with self.db.write() as session:
            row = session.get(Blob, (region, digest), with_for_update=True)
            if row is not None:
                row.size = length
        return f"set the row's size to {length:,}"

    def delete_orphan(self, region: uuid.UUID, key: str, digest: str | None) -> str:
        """Delete an object no blob row knows; `digest` is the blob kept at `key`, if any."""
        try:
            with self.db.write_connection() as connection:
                if digest is not None:
                    # A placeholder row while the object goes: a push reserving this blob
                    # meanwhile waits for it, then finds no object and moves its own in.
                    values = {"region_id": region, "digest": digest, "size": 0}
                    connection.execute(insert(Blob).values(**values, created_at=utcnow()))
                self.portal.call(self.stores[region].delete, key)
                if digest is not None:
                    placeholder = and_(Blob.region_id == region, Blob.digest == digest)
                    connection.execute(delete(Blob).where(placeholder))
        except IntegrityError:
            return "nothing: a push reserved it meanwhile"
        return "deleted"

    def delete_upload_data(self, region: uuid.UUID, prefix: str) -> str:
        self.portal.call(self.stores[region].delete, prefix)
        return "deleted"

    def delete_link(self, region: uuid.UUID, repository: uuid.UUID, digest: str) -> str:
        with self.db.write() as session:
            mine = and_(RepositoryBlob.repository_id == repository, RepositoryBlob.digest == digest)
            session.execute(delete(RepositoryBlob).where(mine, blobless(region, digest)))
        return "deleted the link"

    def record_references(
        self, repository: uuid.UUID, digest: str, missing: Mapping[str, str]
    ) -> str:
        """Record what manifest `digest` names and its reference rows lack: `missing`, each
        digest with its kind."""
        repair = "nothing: the manifest is gone"
        with contextlib.suppress(IntegrityError), self.db.write() as session:
            if session.get(Manifest, (repository, digest), with_for_update=True) is not None:
                session.add_all(
                    ManifestReference(
                        repository_id=repository, manifest_digest=digest, digest=d, kind=kind
                    )
                    for d, kind in missing.items()
                )
                repair = "recorded them"
        return repair

    def missing_reference(self) -> str:
        # Only a push can bring back what a manifest names.
        return "nothing: push the image again"

    def delete_stray_references(self, repository: uuid.UUID, digest: str) -> str:
        mine = and_(
            ManifestReference.repository_id == repository,
            ManifestReference.manifest_digest == digest,
        )
        with self.db.write() as session:
            session.execute(delete(ManifestReference).where(mine, manifestless(repository, digest)))
        return "deleted them (they kept blobs from being collected)"

    def delete_tag(self, repository: uuid.UUID, tag: str) -> str:
        mine = and_(Tag.repository_id == repository, Tag.name == tag)
        with self.db.write() as session:
            session.execute(
                delete(Tag).where(mine, manifestless(Tag.repository_id, Tag.manifest_digest))
            )
        return "deleted the tag: it pointed at nothing"
