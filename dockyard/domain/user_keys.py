"""User API keys: issued, listed and revoked from the command line, resolved on every
/v1 request that carries one.

A key reaches the projects its user is a member of, or only those of its allow-list when
it has one (and is still a member of), with its scopes, until it expires or is revoked.
Membership, revocation and expiry are read on every request, never remembered: taking
any of them away applies at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Uuid, and_, bindparam, func, select, update
from sqlalchemy.orm import Session

from dockyard.db import Database
from dockyard.db.models import Membership, User, UserApiKey, UserApiKeyProject, utcnow
from dockyard.domain.errors import NotFoundError, RefusedError
from dockyard.domain.projects import find_project
from dockyard.domain.users import check_name, find_user, membership
from dockyard.security import hash_api_token, is_user_api_key, new_user_api_key

READ = "read"
WRITE = "write"
SCOPES = (READ, WRITE)


@dataclass(frozen=True)
class KeyInfo:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str | None
    hint: str  # the key's last characters
    scopes: tuple[str, ...]
    project_ids: tuple[uuid.UUID, ...] | None  # the allow-list; None: every membership
    expires_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None


def parse_scopes(values: Iterable[str]) -> tuple[str, ...]:
    """The scopes asked for, as stored: `write` includes `read`, as on most platforms (a key
    that may change a registry may also see it)."""
    asked = {value.strip().lower() for value in values}
    unknown = sorted(asked - set(SCOPES))
    if unknown:
        raise RefusedError(
            f"Unknown scope {', '.join(map(repr, unknown))}: a key's scopes are read and write"
        )
    if not asked:
        raise RefusedError("A key needs a scope: read (GET requests) or write (all requests)")
    if WRITE in asked:
        asked.add(READ)
    return tuple(scope for scope in SCOPES if scope in asked)


# Beyond this an expiry is a typo (year 3024) rather than a choice.
MAX_KEY_LIFETIME = timedelta(days=10 * 366)


def create_key(
    db: Database,
    user_ref: str,
    *,
    scopes: Iterable[str],
    projects: Sequence[str] = (),
    expires_at: datetime | None = None,
    name: str | None = None,
    now: datetime | None = None,
) -> tuple[KeyInfo, str]:
    """A new key for the user, and the key itself: shown once, stored only as a hash.
    `projects`: an allow-list, of projects the user is a member of; empty: all of them."""
    stored_scopes = parse_scopes(scopes)
    name = check_name(name, "Key name")
    if expires_at is not None:
        moment = now or utcnow()
        if expires_at <= moment:
            raise RefusedError("The key's expiry must be in the future")
        if expires_at - moment > MAX_KEY_LIFETIME:
            raise RefusedError("The key's expiry must be at most ten years away")
    with db.write() as session:
        user = find_user(session, user_ref)
        allowed: list[uuid.UUID] = []
        for ref in projects:
            project = find_project(session, ref)
            if membership(session, user.id, project.id) is None:
                raise RefusedError(
                    f"User {user.email} is not a member of project {project.id}; "
                    "add them first (dockyard users add-member)"
                )
            if project.id not in allowed:
                allowed.append(project.id)
        key = new_user_api_key()
        row = UserApiKey(
            user_id=user.id,
            key_hash=hash_api_token(key),
            hint=key[-4:],
            name=name,
            scopes=" ".join(stored_scopes),
            restricted=bool(allowed),
            expires_at=expires_at,
        )
        session.add(row)
        session.flush()
        session.add_all(UserApiKeyProject(key_id=row.id, project_id=p) for p in allowed)
        session.flush()
        return _info(row, tuple(allowed) if allowed else None), key


def list_keys(db: Database, user_ref: str | None = None) -> list[KeyInfo]:
    """The keys of one user, or of every user, oldest first, revoked ones included."""
    with db.read() as session:
        query = select(UserApiKey).order_by(UserApiKey.created_at, UserApiKey.id)
        if user_ref is not None:
            query = query.where(UserApiKey.user_id == find_user(session, user_ref).id)
        return _infos(session, list(session.scalars(query)))


def revoke_key(db: Database, key_ref: str) -> KeyInfo:
    """Revoke by the key's id or by the key itself; at once, for every project."""
    with db.write() as session:
        row: UserApiKey | None = None
        try:
            row = session.get(UserApiKey, uuid.UUID(key_ref))
        except ValueError:
            if is_user_api_key(key_ref):
                row = session.scalar(
                    select(UserApiKey).where(UserApiKey.key_hash == hash_api_token(key_ref))
                )
        if row is None:
            raise NotFoundError("No such user API key")
        if row.revoked_at is None:
            session.execute(
                update(UserApiKey).where(UserApiKey.id == row.id).values(revoked_at=utcnow())
            )
            session.refresh(row)
        [info] = _infos(session, [row])
        return info


def _infos(session: Session, rows: list[UserApiKey]) -> list[KeyInfo]:
    """The keys as shown, each with its allow-list, read in one statement."""
    listed: dict[uuid.UUID, list[uuid.UUID]] = {}
    if rows:
        for key_id, project_id in session.execute(
            select(UserApiKeyProject.key_id, UserApiKeyProject.project_id).where(
                UserApiKeyProject.key_id.in_([row.id for row in rows])
            )
        ):
            listed.setdefault(key_id, []).append(project_id)
    return [
        _info(row, tuple(sorted(listed.get(row.id, []))) if row.restricted else None)
        for row in rows
    ]


def _info(row: UserApiKey, project_ids: tuple[uuid.UUID, ...] | None) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        hint=row.hint,
        scopes=tuple(row.scopes.split()),
        project_ids=project_ids,
        expires_at=row.expires_at,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


# -- on every request ------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyAccess:
    """What a key may do, for the project a request asked for (or the user's default)."""

    key_id: uuid.UUID
    revoked: bool
    expires_at: datetime | None
    scopes: frozenset[str]
    member_of: uuid.UUID | None  # the project asked for, when the user is a member of it
    allowed: bool  # the key's allow-list (if any) names that project

    def live(self, now: datetime) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)

    @property
    def project_id(self) -> uuid.UUID | None:
        """The project the request acts for, or None if the key cannot reach it."""
        return self.member_of if self.allowed else None


# One statement, built once (composing a select costs about as much as running it): the
# key, and whether its user is a member of the project asked for (NULL: the default one)
# and its allow-list names it.
_ASKED = func.coalesce(bindparam("project_id", type_=Uuid), User.default_project_id)
_ACCESS = (
    select(
        UserApiKey.id,
        UserApiKey.revoked_at.is_not(None),
        UserApiKey.expires_at,
        UserApiKey.scopes,
        Membership.project_id,
        UserApiKey.restricted,
        UserApiKeyProject.project_id.is_not(None),
    )
    .join(User, User.id == UserApiKey.user_id)
    .outerjoin(
        Membership, and_(Membership.user_id == UserApiKey.user_id, Membership.project_id == _ASKED)
    )
    .outerjoin(
        UserApiKeyProject,
        and_(UserApiKeyProject.key_id == UserApiKey.id, UserApiKeyProject.project_id == _ASKED),
    )
    .where(UserApiKey.key_hash == bindparam("key_hash"))
)


def key_access_in(session: Session, key: str, project_id: uuid.UUID | None) -> KeyAccess | None:
    """The key's standing for `project_id` (None: the user's default project), read in the
    caller's transaction; None if no key is this one."""
    found = (
        session.connection()
        .execute(_ACCESS, {"key_hash": hash_api_token(key), "project_id": project_id})
        .first()
    )
    if found is None:
        return None
    key_id, revoked, expires_at, scopes, member_of, restricted, listed = found
    return KeyAccess(
        key_id=key_id,
        revoked=bool(revoked),
        expires_at=expires_at,
        scopes=frozenset(scopes.split()),
        member_of=member_of,
        allowed=not restricted or bool(listed),
    )
