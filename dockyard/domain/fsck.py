"""`dockyard fsck`: is every stored byte what the database says, is every row backed by bytes?

Storage is scanned before the database is read. A push writes its rows before its bytes
(the upload row before upload data, the blob row before the blob object), so an object the
scan found and no row knows of is a leftover, not a push in flight. Whatever looks wrong is
looked at again, fresh, before it is reported or repaired, because pushes and garbage
collection go on meanwhile; and nothing younger than the collector's grace period is
touched, because a push may still be writing it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from anyio import to_thread
from anyio.from_thread import BlockingPortal, start_blocking_portal
from sqlalchemy import ColumnElement, exists, select

from dockyard.db import Database
from dockyard.db.models import (
    Blob,
    Manifest,
    ManifestReference,
    Repository,
    RepositoryBlob,
    Tag,
    Upload,
    utcnow,
)
from dockyard.domain.fsck_repairs import Repairs, blobless, manifestless
from dockyard.domain.fsck_report import FsckProgress, FsckReport, Problem
from dockyard.domain.gc import GarbageCollector
from dockyard.domain.manifest_format import parse_manifest, sha256_digest
from dockyard.registry.errors import RegistryError
from dockyard.storage.base import BlobStore, PathNotFoundError, StoredObject
from dockyard.storage.paths import blob_key, upload_prefix

__all__ = ["Fsck", "FsckProgress", "FsckReport", "Problem"]

T = TypeVar("T")
HASHES = ("sha256", "sha512")


class _Quiet:
    def begin(self, blobs: int, size: int) -> None:
        pass

    def advance(self, blobs: int, size: int) -> None:
        pass


def _digest_of(key: str) -> str | None:
    """The digest whose blob_key is `key`, or None for a key no blob is kept at."""
    parts = key.split("/")
    digest = f"{parts[1]}:{parts[3]}" if len(parts) == 5 else ""
    return digest if digest and blob_key(digest) == key else None


def _upload_of(key: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(key.split("/")[1])
    except (IndexError, ValueError):
        return None


async def _hash(store: BlobStore, key: str, algorithm: str, seen: FsckProgress) -> tuple[str, int]:
    hasher, size = hashlib.new(algorithm), 0
    async for chunk in store.read(key):
        await to_thread.run_sync(hasher.update, chunk)  # hashlib lets go of the GIL
        size += len(chunk)
        seen.advance(0, len(chunk))
    return f"{algorithm}:{hasher.hexdigest()}", size


class Fsck:
    """One check of the database against storage and itself; run() once."""

    portal: BlockingPortal
    repairs: Repairs

    def __init__(
        self,
        db: Database,
        stores: Mapping[uuid.UUID, BlobStore],
        regions: Mapping[uuid.UUID, str],
        grace: timedelta,
    ) -> None:
        self.db, self.stores, self.grace = db, stores, grace
        self.regions = regions  # region id -> its slug, for the report
        self.report = FsckReport(repair=False)
        self.progress: FsckProgress = _Quiet()
        self.old = utcnow() - grace  # what changed before this is not in flight

    @property
    def repair(self) -> bool:
        return self.report.repair

    def run(self, *, repair: bool = False, progress: FsckProgress | None = None) -> FsckReport:
        """Check everything; with `repair`, fix what is safe to fix. GcBusyError when a
        collection runs: repairs and collections must not race."""
        self.report, self.progress = FsckReport(repair), progress or _Quiet()
        self.old = utcnow() - self.grace
        collector = GarbageCollector(self.db, dict(self.stores), self.grace, self.grace)
        if repair:
            collector.acquire()  # its lock, so that repairs and collections never race
        try:
            with start_blocking_portal() as self.portal:
                self.repairs = Repairs(self.db, self.stores, self.old, self.portal)
                self.storage()
                self.dangling_links()
                self.references()
                self.dangling_tags()
        finally:
            if repair:
                collector.release()
        return self.report

    def io(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.portal.call(call, *args)

    def problem(self, kind: str, region: uuid.UUID, subject: str, detail: str) -> Problem:
        found = Problem(kind, self.regions.get(region, str(region)), subject, detail)
        self.report.problems.append(found)
        return found

    # -- storage against the blob and upload rows --------------------------------------------

    def storage(self) -> None:
        scans = {
            region: (self.io(store.scan, "blobs"), self.io(store.scan, "uploads"))
            for region, store in self.stores.items()
        }
        with self.db.read() as session:
            rows = session.execute(select(Blob.region_id, Blob.digest, Blob.size, Blob.created_at))
            blobs = [row for row in rows if row.region_id in self.stores]
            links = select(Repository.region_id, RepositoryBlob.digest).join(Repository)
            linked = {(r, d) for r, d in session.execute(links.distinct())}
            uploads = set(session.scalars(select(Upload.id)))
        objects = {region: {o.key: o for o in found} for region, (found, _) in scans.items()}
        stored = [objects[b.region_id].pop(blob_key(b.digest), None) for b in blobs]
        self.progress.begin(sum(1 for s in stored if s), sum(s.size for s in stored if s))
        for (region, digest, size, created), found in zip(blobs, stored, strict=True):
            fresh = created > self.old and (region, digest) not in linked
            self.blob(region, digest, size, found, fresh)
        for region, store in self.stores.items():
            for orphan in objects[region].values():
                self.orphan(region, store, orphan)
            self.stale_uploads(region, store, scans[region][1], uploads)

    def blob(
        self, region: uuid.UUID, digest: str, size: int, stored: StoredObject | None, fresh: bool
    ) -> None:
        store, key = self.stores[region], blob_key(digest)
        if stored is None:
            # A fresh unlinked row is a push between reserving the blob and moving it in.
            if fresh or self.io(store.stat, key) is not None:
                return
            found = self.problem("missing_object", region, digest, "a blob row without its object")
            if self.repair:
                found.repair = self.repairs.drop_blob(region, digest)
            return
        algorithm = digest.partition(":")[0]
        if algorithm not in HASHES:
            return
        try:
            actual, length = self.io(_hash, store, key, algorithm, self.progress)
        except PathNotFoundError:
            return  # collected since the scan
        self.report.blobs += 1
        self.report.bytes += length
        self.progress.advance(1, 0)
        if actual != digest:
            found = self.problem("corrupt_blob", region, digest, f"its bytes hash to {actual}")
            if self.repair:
                found.repair = self.repairs.drop_blob(region, digest)
        elif length != size:
            detail = f"{length:,} bytes stored, the row says {size:,}"
            found = self.problem("wrong_size", region, digest, detail)
            if self.repair:
                found.repair = self.repairs.resize_blob(region, digest, length)

    def orphan(self, region: uuid.UUID, store: BlobStore, stored: StoredObject) -> None:
        digest = _digest_of(stored.key)
        if stored.modified > self.old:
            return
        if digest is not None:
            with self.db.read() as session:
                if session.get(Blob, (region, digest)) is not None:
                    return  # reserved since the scan
        found = self.problem("orphan_object", region, stored.key, "an object no blob row knows")
        if self.repair:
            found.repair = self.repairs.delete_orphan(region, stored.key, digest)

    def stale_uploads(
        self, region: uuid.UUID, store: BlobStore, scanned: Sequence[StoredObject], known: Any
    ) -> None:
        newest: dict[str, datetime] = {}
        for stored in scanned:
            upload_id = _upload_of(stored.key)
            if upload_id not in known:
                prefix = upload_prefix(upload_id) if upload_id else stored.key
                newest[prefix] = max(newest.get(prefix, stored.modified), stored.modified)
        for prefix, modified in newest.items():
            upload_id = _upload_of(prefix)
            if modified > self.old:
                continue  # a writer that lost its row (a cancel racing a chunk) may go on
            if upload_id is not None:
                with self.db.read() as session:
                    if session.get(Upload, upload_id) is not None:
                        continue
            found = self.problem("stale_upload", region, prefix, "upload data without an upload")
            if self.repair:
                found.repair = self.repairs.delete_upload_data(region, prefix)

    # -- the database against itself ---------------------------------------------------------

    def dangling_links(self) -> None:
        query = select(
            Repository.region_id,
            Repository.name,
            RepositoryBlob.repository_id,
            RepositoryBlob.digest,
        ).join(Repository)
        with self.db.read() as session:
            rows = session.execute(
                query.where(blobless(Repository.region_id, RepositoryBlob.digest))
            ).all()
        for region, name, repository, digest in rows:
            subject, detail = f"{name}@{digest}", "a link to a blob the region lacks"
            found = self.problem("dangling_link", region, subject, detail)
            if self.repair:
                found.repair = self.repairs.delete_link(region, repository, digest)

    def references(self) -> None:
        """Every manifest: its digest, and that what it names is recorded and held."""
        found: list[tuple[str, uuid.UUID, str, Any]] = []
        with self.db.read() as session:
            names = {r.id: (r.region_id, r.name) for r in session.scalars(select(Repository))}
            recorded: dict[tuple[uuid.UUID, str], dict[str, str]] = defaultdict(dict)
            for ref in session.scalars(select(ManifestReference)):
                recorded[ref.repository_id, ref.manifest_digest][ref.digest] = ref.kind
            same = (Blob.region_id == Repository.region_id) & (Blob.digest == RepositoryBlob.digest)
            links = select(RepositoryBlob.repository_id, RepositoryBlob.digest).join(Repository)
            held = {(r, d) for r, d in session.execute(links.join(Blob, same))}
            held.update(
                (r, d) for r, d in session.execute(select(Manifest.repository_id, Manifest.digest))
            )
            query = select(
                Manifest.repository_id, Manifest.digest, Manifest.media_type, Manifest.content
            )
            for repository, digest, media_type, content in session.execute(query).yield_per(256):
                refs = recorded.pop((repository, digest), {})
                if digest.startswith("sha256:") and sha256_digest(content) != digest:
                    found.append(("corrupt", repository, digest, "its content has another digest"))
                    continue
                try:
                    parsed = parse_manifest(content, media_type)
                except RegistryError as exc:
                    found.append(("corrupt", repository, digest, f"unreadable: {exc.message}"))
                    continue
                named = {d.digest: "blob" for d in parsed.blobs}
                named.update({d.digest: "manifest" for d in parsed.manifests})
                unrecorded = {d: kind for d, kind in named.items() if d not in refs}
                if unrecorded:
                    found.append(("unrecorded", repository, digest, unrecorded))
                for target, kind in {**named, **refs}.items():
                    if (repository, target) not in held:
                        found.append(("missing", repository, digest, (target, kind)))
        for what, repository, digest, detail in found:
            region, name = names[repository]
            if what == "corrupt":
                self.problem("corrupt_manifest", region, f"{name}@{digest}", detail)
            elif what == "unrecorded":
                self.unrecorded(region, repository, digest, f"{name}@{digest}", detail)
            else:
                self.missing_reference(region, repository, f"{name}@{digest}", *detail)
        for (repository, digest), refs in recorded.items():
            region, name = names[repository]
            self.stray_references(region, repository, digest, f"{name}@{digest}", len(refs))

    def unrecorded(
        self, region: uuid.UUID, repository: uuid.UUID, digest: str, subject: str, missing: Any
    ) -> None:
        # Unrecorded, they are not protected from the collector.
        detail = f"names {len(missing)} digest(s) not recorded as its references"
        found = self.problem("unrecorded_reference", region, subject, detail)
        if self.repair:
            found.repair = self.repairs.record_references(repository, digest, missing)

    def missing_reference(
        self, region: uuid.UUID, repository: uuid.UUID, subject: str, target: str, kind: str
    ) -> None:
        held: ColumnElement[bool]
        if kind == "manifest":
            held = exists().where(Manifest.repository_id == repository, Manifest.digest == target)
        else:
            linked = exists().where(
                RepositoryBlob.repository_id == repository, RepositoryBlob.digest == target
            )
            held = linked & exists().where(Blob.region_id == region, Blob.digest == target)
        with self.db.read() as session:
            if session.scalar(select(held)):
                return  # pushed since
        what = "child manifest" if kind == "manifest" else "blob"
        detail = f"names {what} {target}, which the repository does not hold"
        found = self.problem("missing_reference", region, subject, detail)
        if self.repair:
            found.repair = self.repairs.missing_reference()

    def stray_references(
        self, region: uuid.UUID, repository: uuid.UUID, digest: str, subject: str, count: int
    ) -> None:
        with self.db.read() as session:
            if not session.scalar(select(manifestless(repository, digest))):
                return  # stored since
        detail = f"{count} reference row(s) of a manifest that does not exist"
        found = self.problem("stray_reference", region, subject, detail)
        if self.repair:
            found.repair = self.repairs.delete_stray_references(repository, digest)

    def dangling_tags(self) -> None:
        query = select(
            Repository.region_id, Repository.name, Tag.repository_id, Tag.name, Tag.manifest_digest
        ).join(Repository)
        with self.db.read() as session:
            rows = session.execute(
                query.where(manifestless(Tag.repository_id, Tag.manifest_digest))
            )
            dangling = rows.all()
        for region, name, repository, tag, digest in dangling:
            detail = f"points at {digest}, which does not exist"
            found = self.problem("dangling_tag", region, f"{name}:{tag}", detail)
            if self.repair:
                found.repair = self.repairs.delete_tag(repository, tag)
