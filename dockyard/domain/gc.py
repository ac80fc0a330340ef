"""Online garbage collection: what no manifest references any more goes, while pushes run.

Every deletion locks the row it is about (FOR UPDATE), then looks again with a fresh
statement: a push that was about to use the row either finished first (and is seen) or
waits and then finds the row gone (and fails cleanly, to be retried). Writers lock the
same rows FOR SHARE (manifest pushes, mounts) or refresh them (finished uploads), and
everything younger than the grace period is left alone.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, select
from sqlalchemy.exc import IntegrityError

from dockyard.db import Database
from dockyard.db.models import (
    Blob,
    Manifest,
    ManifestReference,
    Meta,
    Repository,
    RepositoryBlob,
    Tag,
    Upload,
    utcnow,
)
from dockyard.domain.uploads import unclaimed
from dockyard.storage import BlobStore
from dockyard.storage.paths import blob_key, upload_prefix

LOCK_KEY = "gc_lock"
LOCK_SECONDS = 3600

Progress = Callable[[str, int, int], None]


class GcBusyError(Exception):
    """Another collection holds the lock."""


@dataclass
class GcReport:
    dry_run: bool
    manifests: int = 0
    links: int = 0
    blobs: int = 0
    bytes: int = 0
    uploads: int = 0
    errors: list[str] = field(default_factory=list)


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


class GarbageCollector:
    def __init__(
        self,
        db: Database,
        stores: dict[uuid.UUID, BlobStore],
        grace: timedelta,
        upload_ttl: timedelta,
    ) -> None:
        self.db = db
        self.stores = stores
        self.grace = grace
        self.upload_ttl = upload_ttl
        self.holder = secrets.token_hex(8)

    # -- the lock: one collection at a time, across every replica ----------------------------

    def _lock_value(self) -> str:
        until = utcnow() + timedelta(seconds=LOCK_SECONDS)
        return f"{self.holder} {until.isoformat()}"

    def acquire(self) -> None:
        try:
            with self.db.write() as session:
                session.add(Meta(key=LOCK_KEY, value=self._lock_value()))
            return
        except IntegrityError:
            pass
        with self.db.write() as session:
            row = session.get(Meta, LOCK_KEY, with_for_update=True)
            if row is not None:
                until = datetime.fromisoformat(row.value.split(" ", 1)[1])
                if until > utcnow():
                    raise GcBusyError("another garbage collection is running")
                row.value = self._lock_value()  # its holder died; take over
            else:
                session.add(Meta(key=LOCK_KEY, value=self._lock_value()))

    def release(self) -> None:
        with self.db.write() as session:
            row = session.get(Meta, LOCK_KEY)
            if row is not None and row.value.startswith(self.holder + " "):
                session.delete(row)

    # -- the run -------------------------------------------------------------------------------

    def run(
        self,
        *,
        dry_run: bool = False,
        delete_untagged: bool = False,
        progress: Progress | None = None,
    ) -> GcReport:
        report = GcReport(dry_run=dry_run)
        tick = progress or (lambda _phase, _done, _total: None)
        self.acquire()
        try:
            cutoff = utcnow() - self.grace
            if delete_untagged:
                self._manifests(cutoff, dry_run, report, tick)
            self._links(cutoff, dry_run, report, tick)
            self._blobs(cutoff, dry_run, report, tick)
            self._uploads(dry_run, report, tick)
        finally:
            self.release()
        return report

    def _manifests(self, cutoff: datetime, dry: bool, report: GcReport, tick: Progress) -> None:
        def unreferenced(repo_id: Any, digest: Any) -> Any:
            tagged = exists().where(Tag.repository_id == repo_id, Tag.manifest_digest == digest)
            child = exists().where(
                ManifestReference.repository_id == repo_id, ManifestReference.digest == digest
            )
            return and_(~tagged, ~child)

        with self.db.read() as session:
            candidates = session.execute(
                select(Manifest.repository_id, Manifest.digest).where(
                    Manifest.created_at < cutoff,
                    unreferenced(Manifest.repository_id, Manifest.digest),
                )
            ).all()
        for done, (repo_id, digest) in enumerate(candidates, 1):
            tick("untagged manifests", done, len(candidates))
            with self.db.write() as session:
                row = session.get(Manifest, (repo_id, digest), with_for_update=True)
                still = session.scalar(select(unreferenced(repo_id, digest)))
                if row is None or not still:
                    continue
                report.manifests += 1
                if not dry:
                    session.execute(
                        delete(ManifestReference).where(
                            ManifestReference.repository_id == repo_id,
                            ManifestReference.manifest_digest == digest,
                        )
                    )
                    session.delete(row)

    def _links(self, cutoff: datetime, dry: bool, report: GcReport, tick: Progress) -> None:
        def unreferenced(repo_id: Any, digest: Any) -> Any:
            return ~exists().where(
                ManifestReference.repository_id == repo_id, ManifestReference.digest == digest
            )

        with self.db.read() as session:
            candidates = session.execute(
                select(RepositoryBlob.repository_id, RepositoryBlob.digest).where(
                    RepositoryBlob.created_at < cutoff,
                    unreferenced(RepositoryBlob.repository_id, RepositoryBlob.digest),
                )
            ).all()
        for done, (repo_id, digest) in enumerate(candidates, 1):
            tick("unreferenced links", done, len(candidates))
            with self.db.write() as session:
                row = session.get(RepositoryBlob, (repo_id, digest), with_for_update=True)
                if row is None or row.created_at >= cutoff:
                    continue
                if not session.scalar(select(unreferenced(repo_id, digest))):
                    continue
                report.links += 1
                if not dry:
                    session.delete(row)

    def _blobs(self, cutoff: datetime, dry: bool, report: GcReport, tick: Progress) -> None:
        def unlinked(region_id: Any, digest: Any) -> Any:
            return ~exists().where(
                RepositoryBlob.digest == digest,
                RepositoryBlob.repository_id == Repository.id,
                Repository.region_id == region_id,
            )

        with self.db.read() as session:
            candidates = session.execute(
                select(Blob.region_id, Blob.digest).where(
                    Blob.created_at < cutoff, unlinked(Blob.region_id, Blob.digest)
                )
            ).all()
        for done, (region_id, digest) in enumerate(candidates, 1):
            tick("unreferenced blobs", done, len(candidates))
            store = self.stores.get(region_id)
            if store is None:
                continue  # a region no longer configured: leave its storage alone
            with self.db.write() as session:
                row = session.get(Blob, (region_id, digest), with_for_update=True)
                if row is None or row.created_at >= cutoff:
                    continue
                if not session.scalar(select(unlinked(region_id, digest))):
                    continue
                report.blobs += 1
                report.bytes += row.size
                if dry:
                    continue
                # Deleted while the row is locked: an upload of the same blob waits for
                # this transaction, then finds no row and no object, and stores both anew.
                _run(store.delete(blob_key(digest)))
                session.delete(row)

    def _uploads(self, dry: bool, report: GcReport, tick: Progress) -> None:
        now = utcnow()
        stale = now - self.upload_ttl
        with self.db.read() as session:
            candidates = session.execute(
                select(Upload.id, Upload.region_id).where(
                    Upload.updated_at < stale,
                    unclaimed(now),
                )
            ).all()
        for done, (upload_id, region_id) in enumerate(candidates, 1):
            tick("abandoned uploads", done, len(candidates))
            report.uploads += 1
            if dry:
                continue
            with self.db.write() as session:
                session.execute(delete(Upload).where(Upload.id == upload_id))
            store = self.stores.get(region_id)
            if store is not None:
                _run(store.delete(upload_prefix(upload_id)))
