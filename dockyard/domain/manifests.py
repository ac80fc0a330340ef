"""Manifests and tags of a repository: stored as received, checked against what they name."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
from dockyard.domain.manifest_format import OCI_INDEX, ParsedManifest
from dockyard.domain.repositories import RepoRef
from dockyard.registry.errors import RegistryError
from dockyard.registry.grammar import is_digest

_IN_CHUNK = 500  # stays far below every backend's limit of bound parameters


@dataclass(frozen=True)
class StoredManifest:
    digest: str
    media_type: str
    content: bytes


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


class ManifestService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, repo: RepoRef, reference: str, parsed: ParsedManifest, content: bytes) -> None:
        """Store the manifest and point the tag at it; MANIFEST_BLOB_UNKNOWN if it names
        blobs or manifests this repository does not hold."""
        for attempt in range(2):
            try:
                with self.db.write() as session:
                    self._check_references(session, repo, parsed)
                    self._store(session, repo, parsed, content)
                    if not is_digest(reference):
                        self._tag(session, repo, reference, parsed.digest)
                return
            except IntegrityError:
                if attempt:  # a concurrent push of the same manifest or tag got there first
                    raise

    def _check_references(self, session: Session, repo: RepoRef, parsed: ParsedManifest) -> None:
        blob_digests = sorted({d.digest for d in parsed.blobs})
        present: set[str] = set()
        for chunk in _chunks(blob_digests):
            present.update(
                session.scalars(
                    select(RepositoryBlob.digest)
                    .join(
                        Blob,
                        (Blob.digest == RepositoryBlob.digest) & (Blob.region_id == repo.region_id),
                    )
                    .where(
                        RepositoryBlob.repository_id == repo.id, RepositoryBlob.digest.in_(chunk)
                    )
                    # Held until the manifest is stored: garbage collection takes these rows
                    # FOR UPDATE before it deletes them, so it waits and then sees the manifest.
                    .with_for_update(read=True, of=RepositoryBlob)
                )
            )
        child_digests = sorted({d.digest for d in parsed.manifests})
        for chunk in _chunks(child_digests):
            present.update(
                session.scalars(
                    select(Manifest.digest)
                    .where(Manifest.repository_id == repo.id, Manifest.digest.in_(chunk))
                    .with_for_update(read=True)
                )
            )
        missing = [d for d in [*blob_digests, *child_digests] if d not in present]
        if missing:
            raise RegistryError(
                "MANIFEST_BLOB_UNKNOWN",
                f"the manifest references {missing[0]}, which this repository does not hold",
                detail={"digest": missing[0]},
            )

    def _store(
        self, session: Session, repo: RepoRef, parsed: ParsedManifest, content: bytes
    ) -> None:
        if session.get(Manifest, (repo.id, parsed.digest)) is not None:
            return
        session.add(
            Manifest(
                repository_id=repo.id,
                digest=parsed.digest,
                media_type=parsed.media_type,
                artifact_type=parsed.artifact_type,
                subject_digest=parsed.subject.digest if parsed.subject else None,
                annotations=json.dumps(parsed.annotations) if parsed.annotations else None,
                content=content,
                size=len(content),
            )
        )
        references = {d.digest: "blob" for d in parsed.blobs}
        references.update({d.digest: "manifest" for d in parsed.manifests})
        session.add_all(
            ManifestReference(
                repository_id=repo.id, manifest_digest=parsed.digest, digest=digest, kind=kind
            )
            for digest, kind in references.items()
        )

    @staticmethod
    def _tag(session: Session, repo: RepoRef, tag: str, digest: str) -> None:
        row = session.get(Tag, (repo.id, tag))
        if row is None:
            session.add(Tag(repository_id=repo.id, name=tag, manifest_digest=digest))
        else:
            row.manifest_digest = digest
            row.updated_at = utcnow()
        session.flush()

    def get(self, region_id: uuid.UUID, name: str, reference: str) -> StoredManifest | None:
        """The manifest a tag or digest names in the repository `name`, in one query (every
        pull starts here); None when the repository, the tag or the manifest is unknown,
        which a client is told alike."""
        columns = select(Manifest.digest, Manifest.media_type, Manifest.content).join(
            Repository, Repository.id == Manifest.repository_id
        )
        if is_digest(reference):
            query = columns.where(Manifest.digest == reference)
        else:
            query = columns.join(
                Tag,
                (Tag.repository_id == Manifest.repository_id)
                & (Tag.manifest_digest == Manifest.digest),
            ).where(Tag.name == reference)
        query = query.where(Repository.region_id == region_id, Repository.name == name)
        with self.db.read_connection() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else StoredManifest(*row)

    def delete(self, repo: RepoRef, reference: str) -> bool:
        """By digest: the manifest and every tag on it. By tag: only the tag."""
        with self.db.write() as session:
            if not is_digest(reference):
                result = session.execute(
                    delete(Tag).where(Tag.repository_id == repo.id, Tag.name == reference)
                )
                return bool(getattr(result, "rowcount", 0))
            row = session.get(Manifest, (repo.id, reference))
            if row is None:
                return False
            session.execute(
                delete(Tag).where(Tag.repository_id == repo.id, Tag.manifest_digest == reference)
            )
            session.execute(
                delete(ManifestReference).where(
                    ManifestReference.repository_id == repo.id,
                    ManifestReference.manifest_digest == reference,
                )
            )
            session.delete(row)
            return True

    def referrers(
        self, repo: RepoRef, digest: str, artifact_type: str | None
    ) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose subject is `digest`, as the referrers API lists."""
        query = select(Manifest).where(
            Manifest.repository_id == repo.id, Manifest.subject_digest == digest
        )
        if artifact_type:
            query = query.where(Manifest.artifact_type == artifact_type)
        with self.db.read() as session:
            rows = list(session.scalars(query.order_by(Manifest.created_at, Manifest.digest)))
        descriptors = []
        for row in rows:
            descriptor: dict[str, Any] = {
                "mediaType": row.media_type,
                "digest": row.digest,
                "size": row.size,
            }
            if row.artifact_type:
                descriptor["artifactType"] = row.artifact_type
            if row.annotations:
                descriptor["annotations"] = json.loads(row.annotations)
            descriptors.append(descriptor)
        return descriptors


def referrers_index(descriptors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
