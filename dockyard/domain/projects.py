"""Projects (the tenants) and their API tokens."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.db import Database
from dockyard.db.models import ApiToken, Meta, Project, utcnow
from dockyard.domain.errors import NotFoundError, RefusedError
from dockyard.security import hash_api_token, new_api_token

FIRST_PROJECT_KEY = "first_project_id"


@dataclass(frozen=True)
class NewProject:
    id: uuid.UUID
    name: str
    api_token: str


@dataclass(frozen=True)
class TokenInfo:
    id: uuid.UUID
    project_id: uuid.UUID
    hint: str
    created_at: datetime
    revoked_at: datetime | None


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise RefusedError("Project name can't be blank")
    if len(name) > 255:
        raise RefusedError("Project name is too long (maximum is 255 characters)")
    return name


def _issue_token(session: Session, project_id: uuid.UUID) -> tuple[ApiToken, str]:
    token = new_api_token()
    row = ApiToken(project_id=project_id, token_hash=hash_api_token(token), hint=token[-4:])
    session.add(row)
    session.flush()
    return row, token


def create_project(db: Database, name: str) -> NewProject:
    with db.write() as session:
        project = Project(name=_check_name(name))
        session.add(project)
        session.flush()
        _, token = _issue_token(session, project.id)
        return NewProject(project.id, project.name, token)


def create_first_project(db: Database, name: str) -> NewProject | None:
    """Create the installation's first project, once, however many processes race to."""
    try:
        with db.write() as session:
            if session.get(Meta, FIRST_PROJECT_KEY) is not None:
                return None
            if session.scalar(select(Project.id).limit(1)) is not None:
                return None
            project = Project(name=_check_name(name))
            session.add(project)
            session.flush()
            session.add(Meta(key=FIRST_PROJECT_KEY, value=str(project.id)))
            session.flush()
            _, token = _issue_token(session, project.id)
            return NewProject(project.id, project.name, token)
    except IntegrityError:
        return None  # another process created it first


def list_projects(db: Database) -> list[Project]:
    with db.read() as session:
        return list(session.scalars(select(Project).order_by(Project.created_at, Project.id)))


def find_project(session: Session, project_ref: str) -> Project:
    try:
        project_id = uuid.UUID(project_ref)
    except ValueError:
        raise NotFoundError(f"No project with id {project_ref!r}") from None
    project = session.get(Project, project_id)
    if project is None:
        raise NotFoundError(f"No project with id {project_ref!r}")
    return project


def create_token(db: Database, project_ref: str) -> tuple[TokenInfo, str]:
    with db.write() as session:
        project = find_project(session, project_ref)
        row, token = _issue_token(session, project.id)
        return _info(row), token


def list_tokens(db: Database, project_ref: str) -> list[TokenInfo]:
    with db.read() as session:
        project = find_project(session, project_ref)
        rows = session.scalars(
            select(ApiToken).where(ApiToken.project_id == project.id).order_by(ApiToken.created_at)
        )
        return [_info(row) for row in rows]


def revoke_token(db: Database, token_ref: str) -> TokenInfo:
    """Revoke by token id or by the token itself."""
    with db.write() as session:
        row = None
        try:
            row = session.get(ApiToken, uuid.UUID(token_ref))
        except ValueError:
            row = session.scalar(
                select(ApiToken).where(ApiToken.token_hash == hash_api_token(token_ref))
            )
        if row is None:
            raise NotFoundError("No such API token")
        if row.revoked_at is None:
            session.execute(
                update(ApiToken).where(ApiToken.id == row.id).values(revoked_at=utcnow())
            )
            session.refresh(row)
        return _info(row)


# Built once: every /v1 request runs it, and composing a select costs as much as running it.
_LIVE_TOKEN = select(ApiToken.project_id).where(
    ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None)
)


def project_for_token(db: Database, token: str) -> uuid.UUID | None:
    """The project a live API token belongs to, or None."""
    with db.read() as session:
        return project_for_token_in(session, token)


def project_for_token_in(session: Session, token: str) -> uuid.UUID | None:
    """project_for_token in the caller's transaction, so that a request can read its data in
    the same one. Read on every request, never cached: a revocation applies at once."""
    found = session.connection().execute(_LIVE_TOKEN, {"token_hash": hash_api_token(token)})
    return found.scalar()


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(row.id, row.project_id, row.hint, row.created_at, row.revoked_at)
