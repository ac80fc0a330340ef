"""Users and their memberships: the projects a user's API keys may act for.

Administered from the command line (`dockyard users`); /v1 only reads them, on every
request of a user API key (dockyard.domain.user_keys), so that a removed membership ends
the user's access at once.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.db import Database
from dockyard.db.models import Membership, Project, User
from dockyard.domain.errors import NotFoundError, RefusedError
from dockyard.domain.projects import find_project

MAX_EMAIL = 254  # RFC 5321's longest path, less its angle brackets
MAX_NAME = 255
# Deliverability is the mail system's business; this only keeps out what cannot be an
# address at all (and what would make the admin's tables unreadable).
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class UserInfo:
    id: uuid.UUID
    email: str
    name: str | None
    default_project_id: uuid.UUID | None
    project_ids: tuple[uuid.UUID, ...]  # the memberships, oldest first
    created_at: datetime


def _check_email(email: str) -> str:
    email = email.strip().lower()
    if not email:
        raise RefusedError("Email can't be blank")
    if len(email) > MAX_EMAIL:
        raise RefusedError(f"Email is too long (maximum is {MAX_EMAIL} characters)")
    if not _EMAIL.fullmatch(email):
        raise RefusedError(f"Email {email!r} is not an email address (name@example.com)")
    return email


def check_name(name: str | None, label: str = "Name") -> str | None:
    """An optional display name as stored, None when blank; `label` names it in a refusal."""
    if name is None:
        return None
    name = name.strip()
    if len(name) > MAX_NAME:
        raise RefusedError(f"{label} is too long (maximum is {MAX_NAME} characters)")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise RefusedError(f"{label} can't contain control characters")
    return name or None


def find_user(session: Session, user_ref: str) -> User:
    """A user by id or by email (any case)."""
    user: User | None = None
    try:
        user = session.get(User, uuid.UUID(user_ref))
    except ValueError:
        user = session.scalar(select(User).where(User.email == user_ref.strip().lower()))
    if user is None:
        raise NotFoundError(f"No user with id or email {user_ref!r}")
    return user


def membership(session: Session, user_id: uuid.UUID, project_id: uuid.UUID) -> Membership | None:
    return session.get(Membership, (user_id, project_id))


def _info(session: Session, user: User) -> UserInfo:
    projects = session.scalars(
        select(Membership.project_id)
        .where(Membership.user_id == user.id)
        .order_by(Membership.created_at, Membership.project_id)
    )
    return UserInfo(
        user.id, user.email, user.name, user.default_project_id, tuple(projects), user.created_at
    )


def create_user(
    db: Database, email: str, *, name: str | None = None, default_project: str | None = None
) -> UserInfo:
    """A new user; with a default project, also a member of it."""
    email = _check_email(email)
    name = check_name(name)
    try:
        with db.write() as session:
            if session.scalar(select(User.id).where(User.email == email)) is not None:
                raise RefusedError(f"A user with the email {email} already exists")
            project = find_project(session, default_project) if default_project else None
            user = User(email=email, name=name, default_project_id=project.id if project else None)
            session.add(user)
            session.flush()
            if project is not None:
                session.add(Membership(user_id=user.id, project_id=project.id))
                session.flush()
            return _info(session, user)
    except IntegrityError:  # another command created the same email in between
        raise RefusedError(f"A user with the email {email} already exists") from None


def list_users(db: Database) -> list[UserInfo]:
    with db.read() as session:
        users = session.scalars(select(User).order_by(User.created_at, User.id))
        return [_info(session, user) for user in users]


def add_member(db: Database, user_ref: str, project_ref: str, *, default: bool = False) -> UserInfo:
    """Make the user a member of the project (again is fine); `default`: also its default."""
    try:
        with db.write() as session:
            user = find_user(session, user_ref)
            project = find_project(session, project_ref)
            if membership(session, user.id, project.id) is None:
                session.add(Membership(user_id=user.id, project_id=project.id))
            if default:
                user.default_project_id = project.id
            session.flush()
            return _info(session, user)
    except IntegrityError:  # the same membership added at the same moment: it is there
        with db.read() as session:
            return _info(session, find_user(session, user_ref))


def remove_member(db: Database, user_ref: str, project_ref: str) -> UserInfo:
    """End the user's membership: every key of theirs stops reaching the project at once.
    A default project the user is no longer a member of is cleared."""
    with db.write() as session:
        user = find_user(session, user_ref)
        project: Project = find_project(session, project_ref)
        if membership(session, user.id, project.id) is None:
            raise NotFoundError(f"User {user.email} is not a member of project {project.id}")
        session.execute(
            delete(Membership).where(
                Membership.user_id == user.id, Membership.project_id == project.id
            )
        )
        if user.default_project_id == project.id:
            user.default_project_id = None
        session.flush()
        return _info(session, user)
