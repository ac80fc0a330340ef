"""Who calls /v1, and for which project.

A project API token (`dky_…`) acts for its own project, whatever the request says. A user
API key (`dkyu_…`) acts for the project named by the `X-Nodion-Project` header, else for
its user's default project, when the user is a member of it and the key's allow-list (if
it has one) names it; GET and HEAD need the key's `read` scope, every other method `write`.

Refusals, in this order: an unknown, revoked or expired token or key is a 401 (the caller
counts it as a bad token); a method outside the key's scopes is a 403; a project the key
cannot reach is a 404 with one sentence, whether the project exists, belongs to others, is
left out of the allow-list or the header is no project id at all: no key learns of any
project beyond its own, as another project's registry is a 404 like an unknown id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from dockyard.api.errors import ApiError
from dockyard.domain.audit import Actor, token_holder_in
from dockyard.domain.user_keys import READ, WRITE, key_access_in
from dockyard.ids import canonical_uuid
from dockyard.security import is_user_api_key

PROJECT_HEADER = "X-Nodion-Project"
READ_METHODS = frozenset({"GET", "HEAD"})
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="dockyard"'}
UNREACHABLE = (
    f"No project with the id given in {PROJECT_HEADER} is reachable with this API key: "
    "send the id of a project its user is a member of (and that the key allows)"
)
NO_DEFAULT = (
    f"This API key's user has no default project it can reach: send {PROJECT_HEADER}: "
    "<project id> with the id of a project the user is a member of"
)


class InvalidTokenError(ApiError):
    def __init__(self) -> None:
        super().__init__(401, "API token is invalid or has been revoked", headers=CHALLENGE)


@dataclass(frozen=True)
class Asked:
    """What a request says about itself: its credential, the project it names and whether
    it reads or writes."""

    token: str
    projects: tuple[str, ...]  # every X-Nodion-Project header it sent
    method: str

    @classmethod
    def of(cls, request: HTTPConnection, token: str) -> Asked:
        method = request.scope.get("method", "GET")
        return cls(token, tuple(request.headers.getlist(PROJECT_HEADER)), method)

    def project(self) -> tuple[uuid.UUID | None, bool]:
        """The project named, and whether the header (when sent) names one at all: one
        header, with a UUID in its one spelling, as registry ids in paths."""
        if not self.projects:
            return None, True
        if len(self.projects) > 1:  # which one a proxy would believe is anyone's guess
            return None, False
        parsed = canonical_uuid(self.projects[0])
        return parsed, parsed is not None


@dataclass(frozen=True)
class Caller:
    project_id: uuid.UUID
    actor_kind: str  # "api_token" or "user_api_key", as the audit log names them
    credential_id: uuid.UUID
    expires_at: datetime | None  # an answer given to this caller is good until then

    def actor(self, source: str) -> Actor:
        return Actor(self.actor_kind, str(self.credential_id), source)


def caller_in(session: Session, asked: Asked, now: datetime) -> Caller:
    """The caller's project and credential, read in the caller's transaction; raises the
    refusals above. Read on every request, never remembered: revoking a token or a key,
    removing a membership and a key's expiry all apply at once."""
    if not is_user_api_key(asked.token):
        holder = token_holder_in(session, asked.token)
        if holder is None or not holder.live:
            raise InvalidTokenError()
        return Caller(holder.project_id, "api_token", holder.token_id, None)
    named, well_formed = asked.project()
    access = key_access_in(session, asked.token, named)
    if access is None or not access.live(now):
        raise InvalidTokenError()
    needed = READ if asked.method in READ_METHODS else WRITE
    if needed not in access.scopes:
        raise ApiError(
            403,
            f"This API key lacks the {needed} scope that {asked.method} requests need "
            f"(its scopes: {' '.join(sorted(access.scopes))})",
        )
    project_id = access.project_id
    if project_id is None or not well_formed:
        raise ApiError(404, UNREACHABLE if asked.projects else NO_DEFAULT)
    return Caller(project_id, "user_api_key", access.key_id, access.expires_at)
