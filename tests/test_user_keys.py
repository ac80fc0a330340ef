"""User API keys on /v1: the project they act for, their scopes, allow-list, expiry and
revocation, through real HTTP on SQLite and PostgreSQL, also through the read cache.

Time passes by moving the server's injected wall clock, never by sleeping.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dockyard.app import Services, build_services, create_app
from dockyard.config import Settings
from dockyard.db.models import AuditEvent, utcnow
from dockyard.domain.errors import RefusedError
from dockyard.domain.projects import NewProject, create_project
from dockyard.domain.user_keys import create_key, revoke_key
from dockyard.domain.users import UserInfo, add_member, create_user, remove_member

URL = "/v1/container_registries"
EVENTS = "/v1/audit_events"
HEADER = "X-Nodion-Project"
NOTIFY_DEADLINE_SECONDS = 10.0


class WallClock:
    """The server's `now`, moved by hand."""

    def __init__(self) -> None:
        self.moment = utcnow()

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def services(settings: Settings, clock: WallClock) -> Iterator[Services]:
    """The conftest's services, on the test's wall clock (client, project and auth use it)."""
    built = build_services(settings, now=clock)
    yield built
    built.close()


@dataclass
class Team:
    """Alice: a member of A (her default) and B; C exists and is none of hers."""

    a: NewProject
    b: NewProject
    c: NewProject
    alice: UserInfo


@pytest.fixture
def team(client, services, project) -> Team:
    b = create_project(services.db, "Beta")
    c = create_project(services.db, "Gamma")
    alice = create_user(services.db, "alice@example.com", default_project=str(project.id))
    alice = add_member(services.db, alice.email, str(b.id))
    for each, name in ((project, "A's hub"), (b, "B's hub"), (c, "C's hub")):
        body = {"name": name, "registry_type": "docker_hub"}
        created = client.post(URL, json=body, headers=bearer(each.api_token))
        assert created.status_code == 200, created.text
        # The first list creates the managed registry: later lists only read.
        assert client.get(URL, headers=bearer(each.api_token)).status_code == 200
    return Team(project, b, c, alice)


def bearer(token: str, project: object = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if project is not None:
        headers[HEADER] = str(project)
    return headers


def new_key(services: Services, user: str = "alice@example.com", **options: object) -> str:
    options.setdefault("scopes", ["read"])
    _, key = create_key(services.db, user, now=services.now(), **options)
    return key


def names(client, headers) -> list[str]:
    response = client.get(URL, headers=headers)
    assert response.status_code == 200, response.text
    listed = response.json()["container_registries"]
    return [r["name"] for r in listed if r["registry_type"] != "nodion"]  # the external ones


def errors(response, status: int) -> list[str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors"} and body["errors"]
    assert all(isinstance(sentence, str) and sentence for sentence in body["errors"])
    return body["errors"]


def from_memory(client, statements: list[str], *callers: dict[str, str]) -> list[list[str]]:
    """Each caller's list, once a round of them is answered from the read cache alone: the
    proof that the cache holds their answers. (On PostgreSQL the notifications of the
    test's own earlier commits arrive a little after them, and may empty it once more.)"""
    deadline = time.monotonic() + NOTIFY_DEADLINE_SECONDS
    while True:
        for headers in callers:
            names(client, headers)
        statements.clear()
        answers = [names(client, headers) for headers in callers]
        if not statements:
            return answers
        assert time.monotonic() < deadline, "the answers never came from memory"
        time.sleep(0.01)


def project_state(client, project: NewProject) -> dict:
    """What a project sees of itself, through its own project token."""
    headers = bearer(project.api_token)
    return {
        "registries": client.get(URL, headers=headers).json(),
        "events": client.get(EVENTS, headers=headers).json(),
    }


# -- which project ---------------------------------------------------------------------------


def test_the_header_picks_the_project_and_without_it_the_default_one(client, services, team):
    key = new_key(services)
    assert names(client, bearer(key, team.a.id)) == ["A's hub"]
    assert names(client, bearer(key, team.b.id)) == ["B's hub"]
    assert names(client, bearer(key)) == ["A's hub"]  # Alice's default project
    # Any spelling case of the id, as for registry ids in paths.
    assert names(client, bearer(key, str(team.b.id).upper())) == ["B's hub"]


def test_a_user_without_a_default_project_must_name_one(client, services, team):
    bob = create_user(services.db, "bob@example.com")
    add_member(services.db, bob.email, str(team.b.id))
    key = new_key(services, bob.email)
    [sentence] = errors(client.get(URL, headers=bearer(key)), 404)
    assert HEADER in sentence
    assert names(client, bearer(key, team.b.id)) == ["B's hub"]


def test_a_project_the_key_cannot_reach_is_one_404_that_reveals_nothing(client, services, team):
    """Another's project (C), one that does not exist and a header that is no project id
    at all get the very same answer: no key learns whether a project exists."""
    key = new_key(services, scopes=["write"])
    before = project_state(client, team.c)
    hub = {"name": "Alice's", "registry_type": "docker_hub"}
    c_registry = client.get(URL, headers=bearer(team.c.api_token)).json()
    c_id = c_registry["container_registries"][0]["id"]
    for method, path, body in [
        ("GET", URL, None),
        ("POST", URL, hub),
        ("GET", f"{URL}/{c_id}", None),
        ("DELETE", f"{URL}/{c_id}", None),
        ("GET", EVENTS, None),
        ("GET", "/v1/regions", None),
    ]:
        answers = []
        for named in (team.c.id, uuid.uuid4(), "not-a-project", "", str(team.c.id.hex)):
            response = client.request(method, path, json=body, headers=bearer(key, named))
            errors(response, 404)
            answers.append(
                (response.text, {k: v for k, v in response.headers.items() if k != "x-request-id"})
            )
        assert all(answer == answers[0] for answer in answers), (method, path, answers)
        assert str(team.c.id) not in answers[0][0]
    # Two headers: ambiguous, so refused alike (whichever a proxy would have believed).
    twice = client.get(
        URL,
        headers=[
            ("Authorization", f"Bearer {key}"),
            (HEADER, str(team.a.id)),
            (HEADER, str(team.b.id)),
        ],
    )
    assert twice.text == answers[0][0]
    assert project_state(client, team.c) == before


def test_project_tokens_ignore_the_header(client, team):
    own = bearer(team.b.api_token)
    for named in (team.a.id, team.c.id, uuid.uuid4(), "not-a-project"):
        assert names(client, {**own, HEADER: str(named)}) == ["B's hub"]
    body = {"name": "B's too", "registry_type": "ghcr"}
    created = client.post(URL, json=body, headers={**own, HEADER: str(team.a.id)})
    assert created.status_code == 200
    assert names(client, own) == ["B's hub", "B's too"]
    assert names(client, bearer(team.a.api_token)) == ["A's hub"]


# -- scopes ----------------------------------------------------------------------------------


def test_a_read_key_reads_and_every_write_is_a_403_that_changes_nothing(client, services, team):
    key = new_key(services, scopes=["read"])
    headers = bearer(key, team.b.id)
    assert names(client, headers) == ["B's hub"]
    listed = client.get(URL, headers=headers).json()["container_registries"]
    managed, hub = listed[0], listed[-1]
    assert client.get(f"{URL}/{hub['id']}", headers=headers).status_code == 200
    assert client.get(EVENTS, headers=headers).status_code == 200
    assert client.get("/v1/regions", headers=headers).status_code == 200
    before = project_state(client, team.b)

    for method, path, body in [
        ("POST", URL, {"name": "Nope", "registry_type": "docker_hub"}),
        ("PATCH", f"{URL}/{hub['id']}", {"name": "Nope"}),
        ("DELETE", f"{URL}/{hub['id']}", None),
        ("POST", f"{URL}/{managed['id']}/credentials", None),
        ("DELETE", f"{URL}/{managed['id']}/credentials", None),
    ]:
        [sentence] = errors(client.request(method, path, json=body, headers=headers), 403)
        assert "write scope" in sentence and method in sentence
    assert project_state(client, team.b) == before


def test_a_write_key_changes_things_and_the_audit_log_names_it(client, services, team):
    info, key = create_key(services.db, "alice@example.com", scopes=["write"])
    headers = bearer(key, team.b.id)
    created = client.post(URL, json={"name": "B's new", "registry_type": "ghcr"}, headers=headers)
    assert created.status_code == 200, created.text
    registry = created.json()["container_registry"]
    renamed = client.patch(f"{URL}/{registry['id']}", json={"name": "B's 2"}, headers=headers)
    assert renamed.status_code == 200
    assert "B's 2" in names(client, headers)  # write includes read
    assert "B's 2" not in names(client, bearer(key, team.a.id))

    events = client.get(EVENTS, headers=bearer(team.b.api_token)).json()["audit_events"]
    assert [(e["action"], e["actor_type"], e["actor"]) for e in events[:2]] == [
        ("registry.updated", "user_api_key", str(info.id)),
        ("registry.created", "user_api_key", str(info.id)),
    ]
    assert {e["project_id"] for e in events} == {str(team.b.id)}
    assert all(e["source_address"] == "testclient" for e in events[:2])
    assert key not in client.get(EVENTS, headers=headers).text


# -- allow-list ------------------------------------------------------------------------------


def test_an_allow_list_limits_the_key_to_its_projects(client, services, team):
    key = new_key(services, scopes=["write"], projects=[str(team.b.id)])
    assert names(client, bearer(key, team.b.id)) == ["B's hub"]
    outside = client.get(URL, headers=bearer(key, team.a.id))  # a member, not allowed
    unknown = client.get(URL, headers=bearer(key, uuid.uuid4()))
    assert errors(outside, 404) == errors(unknown, 404)
    # Without the header: Alice's default project, A, which this key may not reach.
    errors(client.get(URL, headers=bearer(key)), 404)
    body = {"name": "Nope", "registry_type": "docker_hub"}
    errors(client.post(URL, json=body, headers=bearer(key, team.a.id)), 404)
    assert "Nope" not in names(client, bearer(team.a.api_token))


def test_an_allow_list_names_only_projects_of_the_user(services, team):
    with pytest.raises(RefusedError, match="not a member"):
        new_key(services, projects=[str(team.c.id)])


def test_an_allowed_project_the_user_left_is_not_reached(client, services, team):
    key = new_key(services, projects=[str(team.b.id)])
    assert names(client, bearer(key, team.b.id)) == ["B's hub"]
    remove_member(services.db, "alice@example.com", str(team.b.id))
    errors(client.get(URL, headers=bearer(key, team.b.id)), 404)


# -- membership, revocation, expiry: at once, also through the read cache ---------------------


def test_a_removed_member_loses_access_at_once_even_when_the_answer_is_cached(
    client, services, team, statements
):
    key = new_key(services)
    headers = bearer(key, team.b.id)
    assert from_memory(client, statements, headers) == [["B's hub"]]

    remove_member(services.db, "alice@example.com", str(team.b.id))

    errors(client.get(URL, headers=headers), 404)
    errors(client.get(EVENTS, headers=headers), 404)
    assert names(client, bearer(key, team.a.id)) == ["A's hub"]
    # Added back: reaches B again, as any membership does.
    add_member(services.db, "alice@example.com", str(team.b.id))
    assert names(client, headers) == ["B's hub"]


def test_removing_the_default_project_membership_clears_the_default(client, services, team):
    key = new_key(services)
    assert names(client, bearer(key)) == ["A's hub"]
    left = remove_member(services.db, "alice@example.com", str(team.a.id))
    assert left.default_project_id is None
    assert HEADER in errors(client.get(URL, headers=bearer(key)), 404)[0]


def test_a_revoked_key_is_401_at_once_even_when_the_answer_is_cached(
    client, services, team, statements
):
    info, key = create_key(services.db, "alice@example.com", scopes=["write"])
    headers = bearer(key, team.b.id)
    assert from_memory(client, statements, headers) == [["B's hub"]]

    revoke_key(services.db, key)

    for response in (
        client.get(URL, headers=headers),
        client.get(EVENTS, headers=headers),
        client.post(URL, json={"name": "x", "registry_type": "ghcr"}, headers=headers),
    ):
        assert errors(response, 401) == ["API token is invalid or has been revoked"]
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert key not in response.text
    # Like any token that no longer works: a failed login in the project it asked for.
    with services.db.read() as session:
        failed = list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "login.failed"))
        )
    assert {(e.actor_type, e.actor, e.project_id) for e in failed} == {
        ("user_api_key", str(info.id), team.b.id)
    }
    assert len(failed) == 3


def test_an_expired_key_is_401_even_when_its_answer_is_cached(
    client, services, team, clock, statements
):
    key = new_key(services, expires_at=clock() + timedelta(hours=1))
    a_headers, b_headers = bearer(key, team.a.id), bearer(key, team.b.id)
    # Both answers come from memory while the key is valid.
    assert from_memory(client, statements, a_headers, b_headers) == [["A's hub"], ["B's hub"]]

    clock.advance(minutes=59, seconds=59)
    assert names(client, b_headers) == ["B's hub"]
    clock.advance(seconds=1)  # the database is the same; only time has passed

    for headers in (a_headers, b_headers):
        errors(client.get(URL, headers=headers), 401)
        errors(client.get(f"{URL}/{uuid.uuid4()}", headers=headers), 401)
    errors(client.post(URL, json={"name": "x", "registry_type": "ghcr"}, headers=b_headers), 401)
    # A key that does not expire, and project tokens, know nothing of the clock.
    assert names(client, bearer(new_key(services), team.b.id)) == ["B's hub"]
    assert names(client, bearer(team.b.api_token)) == ["B's hub"]


def test_expired_and_revoked_keys_are_counted_by_the_bad_token_throttle(make_settings, clock, team):
    settings = make_settings(login_failures_per_source=3, login_failure_window_seconds=60)
    services = build_services(settings, now=clock)
    try:
        with TestClient(create_app(settings, services)) as client:
            expiring = new_key(services, expires_at=clock() + timedelta(minutes=5))
            revoked = new_key(services)
            assert names(client, bearer(expiring, team.a.id)) == ["A's hub"]
            revoke_key(services.db, revoked)
            clock.advance(minutes=5)
            errors(client.get(URL, headers=bearer(expiring)), 401)
            errors(client.get(URL, headers=bearer(revoked)), 401)
            errors(client.get(URL, headers=bearer(expiring)), 401)
            blocked = client.get(URL, headers=bearer(team.a.api_token))
            errors(blocked, 429)
            assert int(blocked.headers["retry-after"]) >= 1
    finally:
        services.close()


def test_scopes_and_project_refusals_are_not_bad_tokens(make_settings, clock, team):
    """A valid key asking for too much is no guess at a token: it never gets the address
    blocked."""
    settings = make_settings(login_failures_per_source=2)
    services = build_services(settings, now=clock)
    try:
        with TestClient(create_app(settings, services)) as client:
            key = new_key(services)
            for _ in range(4):
                errors(client.post(URL, json={}, headers=bearer(key)), 403)
                errors(client.get(URL, headers=bearer(key, team.c.id)), 404)
            assert names(client, bearer(key)) == ["A's hub"]
    finally:
        services.close()


# -- the read cache: one entry per key and project -------------------------------------------


def test_the_same_key_gets_each_projects_own_list_from_the_cache(
    client, services, team, statements
):
    key = new_key(services)
    callers = (bearer(key, team.a.id), bearer(key, team.b.id), bearer(key))
    assert from_memory(client, statements, *callers) == [["A's hub"], ["B's hub"], ["A's hub"]]


def test_the_scope_check_comes_before_the_project_so_neither_reveals_the_other(
    client, services, team
):
    key = new_key(services)  # read only
    body = {"name": "x", "registry_type": "ghcr"}
    assert errors(client.post(URL, json=body, headers=bearer(key, team.c.id)), 403) == errors(
        client.post(URL, json=body, headers=bearer(key, uuid.uuid4())), 403
    )


def test_a_user_key_never_sees_another_projects_registries(client, services, team):
    """Alice's write key, told to act for B, on each of C's registries: 404 like any id."""
    key = new_key(services, scopes=["write"])
    headers = bearer(key, team.b.id)
    c_list = client.get(URL, headers=bearer(team.c.api_token)).json()["container_registries"]
    before = project_state(client, team.c)
    for registry in c_list:
        for method in ("GET", "PATCH", "DELETE"):
            body = {"name": "taken"} if method == "PATCH" else None
            real = client.request(method, f"{URL}/{registry['id']}", json=body, headers=headers)
            ghost = client.request(method, f"{URL}/{uuid.uuid4()}", json=body, headers=headers)
            assert errors(real, 404) == errors(ghost, 404)
    assert not {r["id"] for r in c_list} & {
        r["id"] for r in client.get(URL, headers=headers).json()["container_registries"]
    }
    assert project_state(client, team.c) == before
