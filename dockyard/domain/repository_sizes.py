"""Sizes and counts of a registry's repositories and tags, aggregated in the database.

Sizes, in bytes, as stored:

- a repository: every distinct blob linked into it (layers and configs, including blobs
  pushed but not yet referenced by a manifest) plus the bytes of every manifest it holds,
  tagged or not. It is what a pull by any digest can read from it.
- a tag: its manifest, the distinct blobs that manifest references (config and layers),
  and for an index also its child manifests and their distinct blobs (one level down,
  as images are built; non-distributable layers kept elsewhere are not counted).
- a registry's storage used: every distinct blob linked into any of its repositories,
  counted once even when several repositories share it, plus every distinct manifest.
  Blobs shared with other projects are counted in full for each project.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, func, select, union
from sqlalchemy.orm import InstrumentedAttribute, Session

from dockyard.db.models import Blob, Manifest, ManifestReference, Repository, RepositoryBlob, Tag


# Per repository, correlated with the row of `repositories` being listed: a page of at most
# a page's rows, each subquery an index range scan of the repository's own rows.
def summary_columns() -> list[ColumnElement[Any] | InstrumentedAttribute[Any]]:
    tags = select(func.count()).where(Tag.repository_id == Repository.id)
    tagged = select(func.max(Tag.updated_at)).where(Tag.repository_id == Repository.id)
    manifest_bytes = select(func.coalesce(func.sum(Manifest.size), 0)).where(
        Manifest.repository_id == Repository.id
    )
    pushed = select(func.max(Manifest.created_at)).where(Manifest.repository_id == Repository.id)
    blob_bytes = (
        select(func.coalesce(func.sum(Blob.size), 0))
        .select_from(RepositoryBlob)
        .join(
            Blob,
            (Blob.digest == RepositoryBlob.digest) & (Blob.region_id == Repository.region_id),
        )
        .where(RepositoryBlob.repository_id == Repository.id)
    )
    return [
        Repository.name,
        Repository.created_at,
        tags.scalar_subquery().label("tag_count"),
        tagged.scalar_subquery().label("tagged_at"),
        pushed.scalar_subquery().label("pushed_at"),
        manifest_bytes.scalar_subquery().label("manifest_bytes"),
        blob_bytes.scalar_subquery().label("blob_bytes"),
    ]


def tag_sizes(
    session: Session, repo_id: uuid.UUID, region_id: uuid.UUID, roots: Iterable[str]
) -> dict[str, int]:
    """Each root manifest's size with its children's and their distinct blobs': two
    aggregating statements for a whole page of tags."""
    roots = sorted(roots)
    if not roots:
        return {}
    in_repo = ManifestReference.repository_id == repo_id
    members = union(
        select(Manifest.digest.label("root"), Manifest.digest.label("member")).where(
            Manifest.repository_id == repo_id, Manifest.digest.in_(roots)
        ),
        select(
            ManifestReference.manifest_digest.label("root"),
            ManifestReference.digest.label("member"),
        ).where(
            in_repo,
            ManifestReference.manifest_digest.in_(roots),
            ManifestReference.kind == "manifest",
        ),
    ).subquery()
    manifest_bytes = session.execute(
        select(members.c.root, func.sum(Manifest.size))
        .join(
            Manifest,
            (Manifest.repository_id == repo_id) & (Manifest.digest == members.c.member),
        )
        .group_by(members.c.root)
    )
    sizes: dict[str, int] = {root: int(size or 0) for root, size in manifest_bytes}
    blobs = (
        select(members.c.root, ManifestReference.digest)
        .join(
            ManifestReference,
            in_repo
            & (ManifestReference.manifest_digest == members.c.member)
            & (ManifestReference.kind == "blob"),
        )
        .distinct()
        .subquery()
    )
    blob_bytes = session.execute(
        select(blobs.c.root, func.sum(Blob.size))
        .join(Blob, (Blob.digest == blobs.c.digest) & (Blob.region_id == region_id))
        .group_by(blobs.c.root)
    )
    for root, size in blob_bytes:
        sizes[root] = sizes.get(root, 0) + int(size or 0)
    return sizes


def storage_used(session: Session, project_id: uuid.UUID, region_id: uuid.UUID) -> int:
    mine = (Repository.project_id == project_id) & (Repository.region_id == region_id)
    linked = (
        select(RepositoryBlob.digest)
        .join(Repository, Repository.id == RepositoryBlob.repository_id)
        .where(mine)
    )
    blob_bytes = session.scalar(
        select(func.coalesce(func.sum(Blob.size), 0)).where(
            Blob.region_id == region_id, Blob.digest.in_(linked)
        )
    )
    manifests = (
        select(Manifest.digest, Manifest.size)
        .join(Repository, Repository.id == Manifest.repository_id)
        .where(mine)
        .distinct()
        .subquery()
    )
    manifest_bytes = session.scalar(select(func.coalesce(func.sum(manifests.c.size), 0)))
    return int(blob_bytes or 0) + int(manifest_bytes or 0)
