"""Browsing a managed registry: its repositories and tags with their sizes, and deleting them.

Free of HTTP, so that /v1 and the web console share it. Every method takes the caller's
project and a registry id as it came in; a registry of another project is not found, an
external registry is refused (there is nothing of it stored here to browse).

Sizes are defined in dockyard.domain.repository_sizes.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from sqlalchemy import ColumnElement, Row, Select, delete, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from dockyard.db import Database
from dockyard.db.models import (
    Manifest,
    ManifestReference,
    Repository,
    RepositoryBlob,
    Tag,
    Upload,
)
from dockyard.domain import audit
from dockyard.domain.audit import Actor
from dockyard.domain.errors import NotFoundError, RefusedError
from dockyard.domain.registries import RegistryService, RegistryView
from dockyard.domain.registry_fields import MANAGED_TYPE
from dockyard.domain.repository_sizes import storage_used, summary_columns, tag_sizes
from dockyard.registry.grammar import MAX_NAME, NAME_RE, TAG_RE
from dockyard.storage import BlobStore
from dockyard.storage.paths import upload_prefix

MAX_PER_PAGE = 100
# Far beyond any real registry; bounds the OFFSET handed to the database.
MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class RepositorySummary:
    name: str  # the full name, <project-id>/<path>, as pushed
    tag_count: int
    size_bytes: int
    last_pushed_at: datetime | None  # the newest manifest or tag change; None before any
    created_at: datetime


@dataclass(frozen=True)
class RepositoryPage:
    registry: RegistryView
    repositories: list[RepositorySummary]
    total: int  # repositories in the whole registry
    storage_used_bytes: int
    page: int
    per_page: int


@dataclass(frozen=True)
class RepositoryBrief:
    """What a page that asks before a deletion names: none of the sizes."""

    name: str
    tag_count: int


@dataclass(frozen=True)
class TagSummary:
    name: str
    digest: str
    media_type: str | None  # None only for a tag whose manifest is missing (see fsck)
    size_bytes: int
    pushed_at: datetime


@dataclass(frozen=True)
class TagPage:
    registry: RegistryView
    repository: RepositorySummary
    tags: list[TagSummary]
    total: int  # tags of the whole repository
    page: int
    per_page: int


def check_page(page: int, per_page: int) -> None:
    problems = []
    if not 1 <= page <= MAX_PAGE:
        problems.append(f"page must be between 1 and {MAX_PAGE}")
    if not 1 <= per_page <= MAX_PER_PAGE:
        problems.append(f"per_page must be between 1 and {MAX_PER_PAGE}")
    if problems:
        raise RefusedError(*problems)


def parse_repository_name(name: str) -> str:
    """A repository's full name from a path. Names never hold '%', so one that does was
    encoded twice (`%252F`, as Harbor's API wants) and is decoded once more."""
    if "%" in name:
        name = unquote(name)  # what is not UTF-8 becomes U+FFFD, which no name holds
    if len(name) > MAX_NAME or not NAME_RE.match(name):
        raise RefusedError(
            "Repository name is invalid: it is <project-id>/<path>, lower-case path components "
            "of letters and digits joined by '.', '_', '__' or '-', separated by '/', at most "
            f"{MAX_NAME} characters"
        )
    return name


def parse_tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise RefusedError(
            "Tag is invalid: it is 1 to 128 letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'"
        )
    return tag


def _later(*moments: datetime | None) -> datetime | None:
    present = [moment for moment in moments if moment is not None]
    return max(present) if present else None


def _summary(row: Any) -> RepositorySummary:
    return RepositorySummary(
        name=row.name,
        tag_count=int(row.tag_count),
        size_bytes=int(row.manifest_bytes) + int(row.blob_bytes),
        last_pushed_at=_later(row.tagged_at, row.pushed_at),
        created_at=row.created_at,
    )


@dataclass(frozen=True)
class _Repo:
    id: uuid.UUID
    region_id: uuid.UUID
    name: str


class BrowseService:
    def __init__(
        self, db: Database, registries: RegistryService, stores: dict[uuid.UUID, BlobStore]
    ) -> None:
        self.db = db
        self.registries = registries
        self.stores = stores

    # -- reading -----------------------------------------------------------------------------

    def managed_in(
        self, session: Session, project_id: uuid.UUID, registry_ref: str
    ) -> RegistryView:
        """The project's managed registry; 404 for any other project's, 400 for an external."""
        view = self.registries.get_in(session, project_id, registry_ref)
        if view.registry_type != MANAGED_TYPE or view.region_id is None:
            raise RefusedError(
                "Only managed registries can be browsed: this is an external registry "
                f"({view.registry_type}), whose repositories are kept at {view.hostname}"
            )
        return view

    def repositories_in(
        self,
        session: Session,
        project_id: uuid.UUID,
        registry_ref: str,
        page: int = 1,
        per_page: int = 25,
    ) -> RepositoryPage:
        """The registry's repositories by name, a page at a time (`page` from 1)."""
        view = self.managed_in(session, project_id, registry_ref)
        check_page(page, per_page)
        assert view.region_id is not None
        mine = (Repository.project_id == project_id) & (Repository.region_id == view.region_id)
        # The page's ids first: PostgreSQL would compute the summaries of the rows OFFSET
        # skips too (a deep page took 3x the first).
        ids = (
            select(Repository.id)
            .where(mine)
            .order_by(Repository.name)
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
        rows = session.execute(
            select(*summary_columns())
            .where(Repository.id.in_(ids.scalar_subquery()))
            .order_by(Repository.name)
        )
        total = session.scalar(select(func.count()).select_from(Repository).where(mine)) or 0
        return RepositoryPage(
            registry=view,
            repositories=[_summary(row) for row in rows],
            total=total,
            storage_used_bytes=storage_used(session, project_id, view.region_id),
            page=page,
            per_page=per_page,
        )

    def repository_in(
        self, session: Session, project_id: uuid.UUID, registry_ref: str, name: str
    ) -> RepositorySummary:
        view = self.managed_in(session, project_id, registry_ref)
        return self._summarised(session, project_id, view, name)[1]

    def brief_in(
        self,
        session: Session,
        project_id: uuid.UUID,
        registry_ref: str,
        name: str,
        tag: str | None = None,
    ) -> RepositoryBrief:
        """The repository, and when `tag` is given, only if it has that tag: a page that asks
        before deleting a tag that is not there would ask for nothing."""
        view = self.managed_in(session, project_id, registry_ref)
        repo = self._find(session, project_id, view, name)
        if tag is not None:
            self._tag_row(session, repo, tag)
        tags = select(func.count()).select_from(Tag).where(Tag.repository_id == repo.id)
        return RepositoryBrief(repo.name, session.scalar(tags) or 0)

    def tags_in(
        self,
        session: Session,
        project_id: uuid.UUID,
        registry_ref: str,
        name: str,
        page: int = 1,
        per_page: int = 25,
    ) -> TagPage:
        """The repository's tags by name, a page at a time, with their sizes."""
        view = self.managed_in(session, project_id, registry_ref)
        repo, summary = self._summarised(session, project_id, view, name)
        check_page(page, per_page)
        rows = session.execute(
            self._tag_rows(repo).order_by(Tag.name).offset((page - 1) * per_page).limit(per_page)
        ).all()
        sizes = tag_sizes(session, repo.id, repo.region_id, {row.manifest_digest for row in rows})
        return TagPage(
            registry=view,
            repository=summary,
            tags=[self._tag(row, sizes) for row in rows],
            total=summary.tag_count,
            page=page,
            per_page=per_page,
        )

    def _find(
        self, session: Session, project_id: uuid.UUID, view: RegistryView, name: str
    ) -> _Repo:
        row = self._row(session, project_id, view, name, Repository.name)
        return _Repo(row.id, row.region_id, row.name)

    def _summarised(
        self, session: Session, project_id: uuid.UUID, view: RegistryView, name: str
    ) -> tuple[_Repo, RepositorySummary]:
        """The repository with its counts and sizes, for the answers that show them."""
        row = self._row(session, project_id, view, name, *summary_columns())
        return _Repo(row.id, row.region_id, row.name), _summary(row)

    @staticmethod
    def _row(
        session: Session,
        project_id: uuid.UUID,
        view: RegistryView,
        name: str,
        *columns: ColumnElement[Any] | InstrumentedAttribute[Any],
    ) -> Row[Any]:
        name = parse_repository_name(name)
        row = session.execute(
            select(Repository.id, Repository.region_id, *columns).where(
                Repository.project_id == project_id,
                Repository.region_id == view.region_id,
                Repository.name == name,
            )
        ).one_or_none()
        if row is None:
            raise NotFoundError(f"Repository {name} not found in this registry")
        return row

    @staticmethod
    def _tag_rows(repo: _Repo) -> Select[str, str, datetime, str]:
        return (
            select(Tag.name, Tag.manifest_digest, Tag.updated_at, Manifest.media_type)
            .outerjoin(
                Manifest,
                (Manifest.repository_id == Tag.repository_id)
                & (Manifest.digest == Tag.manifest_digest),
            )
            .where(Tag.repository_id == repo.id)
        )

    def _tag_row(self, session: Session, repo: _Repo, tag: str) -> Any:
        """The repository's tag of that name, as _tag_rows selects it."""
        name = parse_tag(tag)
        row = session.execute(self._tag_rows(repo).where(Tag.name == name)).one_or_none()
        if row is None:
            raise NotFoundError(f"Tag {name} not found in repository {repo.name}")
        return row

    @staticmethod
    def _tag(row: Any, sizes: dict[str, int]) -> TagSummary:
        return TagSummary(
            name=row.name,
            digest=row.manifest_digest,
            media_type=row.media_type,
            size_bytes=sizes.get(row.manifest_digest, 0),
            pushed_at=row.updated_at,
        )

    # -- deleting ----------------------------------------------------------------------------

    def delete_tag(
        self,
        project_id: uuid.UUID,
        registry_ref: str,
        name: str,
        tag: str,
        actor: Actor | None = None,
    ) -> TagSummary:
        """Remove the tag; its manifest stays, reachable by digest, until garbage collection
        with untagged manifests removes it. Answers the tag as it was."""
        with self.db.write() as session:
            view = self.managed_in(session, project_id, registry_ref)
            repo = self._find(session, project_id, view, name)
            row = self._tag_row(session, repo, tag)
            tag = row.name
            shown = self._tag(
                row, tag_sizes(session, repo.id, repo.region_id, [row.manifest_digest])
            )
            session.execute(delete(Tag).where(Tag.repository_id == repo.id, Tag.name == tag))
            audit.record(
                session,
                project_id,
                audit.TAG_DELETED,
                registry_id=view.id,
                subject=f"{repo.name}:{tag}",
                actor=actor,
            )
            return shown

    def delete_repository(
        self, project_id: uuid.UUID, registry_ref: str, name: str, actor: Actor | None = None
    ) -> RepositorySummary:
        """Remove the repository with its tags, manifests, blob links and open uploads.
        Its blobs that no other repository of the region links become garbage, freed by
        the next collection. Answers the repository as it was. Call it from a worker
        thread: it also deletes the data of the open uploads from storage."""
        with self.db.write() as session:
            view = self.managed_in(session, project_id, registry_ref)
            # The repository as it was is the answer /v1 gives.
            repo, summary = self._summarised(session, project_id, view, name)
            uploads = list(
                session.scalars(select(Upload.id).where(Upload.repository_id == repo.id))
            )
            # Children first: on either backend the foreign keys would cascade, but saying
            # it here keeps the deletion independent of how the schema was made.
            session.execute(delete(Tag).where(Tag.repository_id == repo.id))
            session.execute(
                delete(ManifestReference).where(ManifestReference.repository_id == repo.id)
            )
            session.execute(delete(Manifest).where(Manifest.repository_id == repo.id))
            session.execute(delete(RepositoryBlob).where(RepositoryBlob.repository_id == repo.id))
            session.execute(delete(Upload).where(Upload.repository_id == repo.id))
            session.execute(delete(Repository).where(Repository.id == repo.id))
            audit.record(
                session,
                project_id,
                audit.REPOSITORY_DELETED,
                registry_id=view.id,
                subject=repo.name,
                actor=actor,
            )
        store = self.stores.get(repo.region_id)
        if store is not None and uploads:
            # After the commit: an upload whose row is gone can't be continued anyway, and
            # data left behind by a failure here is an orphan `dockyard fsck --repair` removes.
            asyncio.run(_delete_all(store, uploads))
        return summary


async def _delete_all(store: BlobStore, uploads: list[uuid.UUID]) -> None:
    for upload_id in uploads:
        await store.delete(upload_prefix(upload_id))
