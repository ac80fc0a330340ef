"""The audit log: who generated, rotated or revoked credentials, changed a registry, or
failed to log in.

A change's event is written in the transaction of the change (`record`), so that there is
never one without the other. Failed logins are written in transactions of their own by
`AuditLog`, at most as often as the throttle lets failures through: once a source or an
account is blocked, its refused attempts write nothing, and the block itself is one
`login.blocked` event.

Events never hold a secret: the actor is an API token's id or a robot's username, never a
token or password. A failed login can only be tied to a project when its username names a
robot (or its API token was once valid); events that belong to no project stay in the
table for operators and are listed to no project.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from dockyard.db import Database
from dockyard.db.models import ApiToken, AuditEvent, RobotAccount, utcnow
from dockyard.domain.user_keys import key_access_in
from dockyard.security import hash_api_token, is_user_api_key

CREDENTIALS_GENERATED = "credentials.generated"
CREDENTIALS_REVOKED = "credentials.revoked"
CREDENTIALS_ROTATED = "credentials.rotated"
REGISTRY_CREATED = "registry.created"
REGISTRY_UPDATED = "registry.updated"
REGISTRY_DELETED = "registry.deleted"
LOGIN_FAILED = "login.failed"
LOGIN_BLOCKED = "login.blocked"
TAG_DELETED = "tag.deleted"
REPOSITORY_DELETED = "repository.deleted"

MAX_ACTOR_CHARS = 128
MAX_SOURCE_CHARS = 64
MAX_SUBJECT_CHARS = 400  # a repository's name (255) and a tag (128)


@dataclass(frozen=True)
class Actor:
    """Who acts: `api_token` (name: the token's id), `user_api_key` (name: the key's id),
    `robot` (name: its username), `anonymous` (a failed login that names no one we know), or
    `local` (no request: the admin CLI, a script)."""

    kind: str
    name: str | None = None
    source: str | None = None


LOCAL = Actor("local")

# Set by /v1's authentication for the rest of the request. A context variable because the
# handlers hand the domain services only the project's id; a service method also takes an
# `actor` argument, which wins when given. Each request runs in a task of its own, whose
# context worker threads inherit, so no request sees another's actor.
_acting: ContextVar[Actor | None] = ContextVar("dockyard_audit_actor", default=None)


def act_as(actor: Actor) -> None:
    _acting.set(actor)


def current_actor() -> Actor:
    return _acting.get() or LOCAL


def record(
    session: Session,
    project_id: uuid.UUID | None,
    action: str,
    *,
    registry_id: uuid.UUID | None = None,
    subject: str | None = None,
    actor: Actor | None = None,
) -> None:
    """Add an event to the caller's transaction: it commits or rolls back with the change.
    `subject` names what inside the registry was acted on (`<repository>[:<tag>]`)."""
    who = actor or current_actor()
    session.add(
        AuditEvent(
            id=uuid.uuid4(),
            project_id=project_id,
            created_at=utcnow(),
            action=action,
            actor_type=who.kind,
            actor=who.name[:MAX_ACTOR_CHARS] if who.name else None,
            registry_id=registry_id,
            source=who.source[:MAX_SOURCE_CHARS] if who.source else None,
            subject=subject[:MAX_SUBJECT_CHARS] if subject else None,
        )
    )


@dataclass(frozen=True)
class EventView:
    id: uuid.UUID
    project_id: uuid.UUID | None
    created_at: datetime
    action: str
    actor_type: str
    actor: str | None
    registry_id: uuid.UUID | None
    source: str | None
    subject: str | None = None


@dataclass(frozen=True)
class EventPage:
    events: list[EventView]
    total: int


@dataclass(frozen=True)
class TokenHolder:
    """Whose an API token is, whether or not it still works."""

    token_id: uuid.UUID
    project_id: uuid.UUID
    live: bool


# Built once: every /v1 write runs it (see dockyard.domain.projects._LIVE_TOKEN).
_HOLDER = select(ApiToken.id, ApiToken.project_id, ApiToken.revoked_at.is_(None)).where(
    ApiToken.token_hash == bindparam("token_hash")
)


def token_holder_in(session: Session, token: str) -> TokenHolder | None:
    found = session.connection().execute(_HOLDER, {"token_hash": hash_api_token(token)}).first()
    return None if found is None else TokenHolder(found[0], found[1], bool(found[2]))


class AuditLog:
    """Failed logins, written on their own, and the project's events, read back."""

    def __init__(self, db: Database, robot_prefix: str) -> None:
        self.db = db
        self._robot_name = re.compile(re.escape(robot_prefix) + r"project-[0-9a-f]{8}")

    def failed_robot_login(self, source: str, username: str, *, blocked: bool = False) -> None:
        """A wrong robot username or password. The username is recorded when a robot has
        it, or has the shape robots' names have: anything else may be a password typed
        into the wrong field, and is not kept."""
        with self.db.write() as session:
            project_id = None
            if "\x00" not in username and len(username) <= MAX_ACTOR_CHARS:
                project_id = session.scalar(
                    select(RobotAccount.project_id).where(RobotAccount.username == username)
                )
            known = project_id is not None or self._robot_name.fullmatch(username) is not None
            actor = Actor("robot", username, source) if known else Actor("anonymous", None, source)
            self._failed(session, project_id, actor, blocked)

    def failed_api_token(
        self,
        source: str,
        token: str | None,
        *,
        blocked: bool = False,
        project: uuid.UUID | None = None,
    ) -> None:
        """A missing, unknown or revoked API token; a revoked one still names its project. A
        revoked or expired user API key is named in the project the request asked for
        (`project`; None: the user's default), if its user is a member of that one."""
        with self.db.write() as session:
            if token and is_user_api_key(token):
                access = key_access_in(session, token, project)
                if access is not None:
                    actor = Actor("user_api_key", str(access.key_id), source)
                    self._failed(session, access.member_of, actor, blocked)
                    return
            holder = token_holder_in(session, token) if token else None
            if holder is None:
                self._failed(session, None, Actor("anonymous", None, source), blocked)
            else:
                actor = Actor("api_token", str(holder.token_id), source)
                self._failed(session, holder.project_id, actor, blocked)

    def _failed(
        self, session: Session, project_id: uuid.UUID | None, actor: Actor, blocked: bool
    ) -> None:
        record(session, project_id, LOGIN_FAILED, actor=actor)
        if blocked:
            record(session, project_id, LOGIN_BLOCKED, actor=actor)

    def page_in(
        self, session: Session, project_id: uuid.UUID, page: int, per_page: int
    ) -> EventPage:
        """The project's events, newest first; `page` counts from 1."""
        total = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.project_id == project_id)
        )
        rows = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.project_id == project_id)
            .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
        events = [
            EventView(
                id=row.id,
                project_id=row.project_id,
                created_at=row.created_at,
                action=row.action,
                actor_type=row.actor_type,
                actor=row.actor,
                registry_id=row.registry_id,
                source=row.source,
                subject=row.subject,
            )
            for row in rows
        ]
        return EventPage(events, total or 0)
