"""The audit log: what is recorded, what /v1/audit_events lists and to whom, and no secrets."""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from dockyard.db.models import AuditEvent, ContainerRegistry
from dockyard.domain import audit
from dockyard.domain.projects import create_project, create_token, list_tokens, revoke_token

URL = "/v1/audit_events"
REGISTRIES = "/v1/container_registries"
HUB = {"name": "Hub", "registry_type": "docker_hub", "username": "me", "password": "hub-secret"}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")


def events(client, auth, **params) -> list[dict]:
    response = client.get(URL, headers=auth, params=params)
    assert response.status_code == 200, response.text
    return response.json()["audit_events"]


def all_rows(services) -> list[AuditEvent]:
    with services.db.read() as session:
        return list(session.scalars(select(AuditEvent)))


def token_id(services, project) -> str:
    [info] = list_tokens(services.db, str(project.id))
    return str(info.id)


def login(client, username: str, password: str):
    return client.get("/auth/token", auth=(username, password))


def new_token(services, project_id) -> str:
    _, token = create_token(services.db, str(project_id))
    return token


def test_every_kind_of_event_is_listed_newest_first_with_its_fields(
    client, services, project, auth, robot
):
    hub = client.post(REGISTRIES, json=HUB, headers=auth).json()["container_registry"]
    assert client.patch(f"{REGISTRIES}/{hub['id']}", json={"name": "Hub 2"}, headers=auth)
    assert client.delete(f"{REGISTRIES}/{hub['id']}", headers=auth).status_code == 200
    assert login(client, robot.username, "wrong").status_code == 401
    revoked = client.delete(f"{REGISTRIES}/{robot.registry_id}/credentials", headers=auth)
    assert revoked.status_code == 200

    listed = events(client, auth)
    assert [event["action"] for event in listed] == [
        "credentials.revoked",
        "login.failed",
        "registry.deleted",
        "registry.updated",
        "registry.created",
        "credentials.generated",  # by the robot fixture
    ]
    caller = token_id(services, project)
    for event in listed:
        assert set(event) == {
            "id",
            "action",
            "actor_type",
            "actor",
            "registry_id",
            "source_address",
            "subject",
            "project_id",
            "created_at",
        }
        assert event["subject"] is None  # set only for deletions inside a registry
        assert event["project_id"] == str(project.id)
        assert event["source_address"] == "testclient"  # the TestClient's peer
        assert TIME.match(event["created_at"]), event["created_at"]
        if event["action"] == "login.failed":
            assert (event["actor_type"], event["actor"]) == ("robot", robot.username)
            assert event["registry_id"] is None
        else:
            assert (event["actor_type"], event["actor"]) == ("api_token", caller)
    registry_ids = [event["registry_id"] for event in listed]
    assert registry_ids[0] == registry_ids[-1] == robot.registry_id
    assert registry_ids[2:5] == [hub["id"]] * 3


def test_pages(client, auth, project):
    for n in range(5):
        created = client.post(REGISTRIES, json={**HUB, "name": f"Hub {n}"}, headers=auth)
        assert created.status_code == 200
    newest_first = events(client, auth, per_page=100)
    assert len(newest_first) == 5
    first = client.get(URL, headers=auth, params={"per_page": 2}).json()
    assert first["meta"] == {"page": 1, "per_page": 2, "total": 5}
    pages = [events(client, auth, page=page, per_page=2) for page in (1, 2, 3, 4)]
    assert [len(page) for page in pages] == [2, 2, 1, 0]
    assert [event["id"] for page in pages for event in page] == [e["id"] for e in newest_first]
    assert client.get(URL, headers=auth).json()["meta"]["per_page"] == 25


@pytest.mark.parametrize(
    "params",
    [
        {"page": 0},
        {"page": -1},
        {"page": "two"},
        {"page": 10**30},
        {"per_page": 0},
        {"per_page": 101},
        {"per_page": "1.5"},
    ],
)
def test_bad_paging_is_a_400_with_sentences(client, auth, params):
    response = client.get(URL, headers=auth, params=params)
    assert response.status_code == 400, response.text
    [sentence] = response.json()["errors"]
    assert next(iter(params)) in sentence


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer dky_nope"}, {"Authorization": "Basic eDp5"}]
)
def test_without_a_valid_token_it_is_401_even_with_bad_paging(client, project, headers):
    response = client.get(URL, headers=headers, params={"page": 0})
    assert response.status_code == 401
    assert response.json()["errors"]


def test_a_project_never_sees_another_projects_events(
    client, services, project, auth, robot, other_robot
):
    assert login(client, robot.username, "wrong").status_code == 401
    assert login(client, other_robot.username, "wrong").status_code == 401
    assert login(client, "robot$project-00000000", "wrong").status_code == 401  # no one's
    other_token = list_tokens(services.db, other_robot.project_id)[0]
    other_auth = {"Authorization": f"Bearer {new_token(services, other_robot.project_id)}"}

    mine = events(client, auth)
    theirs = events(client, other_auth)
    assert {event["project_id"] for event in mine} == {str(project.id)}
    assert {event["project_id"] for event in theirs} == {other_robot.project_id}
    assert [e["actor"] for e in mine if e["action"] == "login.failed"] == [robot.username]
    assert [e["actor"] for e in theirs if e["action"] == "login.failed"] == [other_robot.username]
    assert str(other_token.id) not in {event["actor"] for event in mine}
    assert not {e["id"] for e in mine} & {e["id"] for e in theirs}
    # The login that names no robot is kept, and listed to no project.
    [nobody] = [row for row in all_rows(services) if row.project_id is None]
    assert (nobody.action, nobody.actor_type, nobody.actor) == (
        "login.failed",
        "robot",
        "robot$project-00000000",
    )


def test_bad_api_tokens_are_recorded_with_what_can_be_known(client, services, project, auth):
    spare = new_token(services, project.id)
    revoke_token(services.db, spare)
    assert client.get(REGISTRIES, headers={"Authorization": f"Bearer {spare}"}).status_code == 401
    assert client.get(REGISTRIES, headers={"Authorization": "Bearer dky_nope"}).status_code == 401
    assert client.post(REGISTRIES, json=HUB).status_code == 401

    [revoked] = events(client, auth)
    spare_id = next(t.id for t in list_tokens(services.db, str(project.id)) if t.revoked_at)
    assert (revoked["action"], revoked["actor_type"], revoked["actor"]) == (
        "login.failed",
        "api_token",
        str(spare_id),
    )
    anonymous = [row for row in all_rows(services) if row.project_id is None]
    assert [(row.action, row.actor_type, row.actor) for row in anonymous] == [
        ("login.failed", "anonymous", None)
    ] * 2


def test_a_brute_force_writes_a_row_per_counted_failure_and_one_for_the_block(
    make_client, services, project, robot
):
    client = make_client(login_failures_per_account=3)
    for _ in range(10):
        login(client, robot.username, "wrong")
    auth = {"Authorization": f"Bearer {project.api_token}"}
    actions = [event["action"] for event in events(client, auth)]
    assert actions.count("login.failed") == 3
    assert actions.count("login.blocked") == 1


def test_no_secret_is_ever_recorded(client, services, project, auth, robot):
    hub = client.post(REGISTRIES, json=HUB, headers=auth).json()["container_registry"]
    client.patch(f"{REGISTRIES}/{hub['id']}", json={"password": "new-hub-secret"}, headers=auth)
    login(client, robot.username, "a-wrong-guess")
    # A password typed into the username field is not kept either.
    login(client, robot.password, robot.password)
    client.post(REGISTRIES, json=HUB, headers={"Authorization": "Bearer dky_a-wrong-token"})
    client.post(REGISTRIES, json=HUB, headers={"Authorization": f"Bearer {project.api_token}x"})
    client.delete(f"{REGISTRIES}/{robot.registry_id}/credentials", headers=auth)
    generated = client.post(f"{REGISTRIES}/{robot.registry_id}/credentials", headers=auth)
    new_password = generated.json()["container_registry"]["password"]

    secrets = [
        robot.password,
        new_password,
        project.api_token,
        "hub-secret",
        "a-wrong-guess",
        "a-wrong-token",
    ]
    rows = all_rows(services)
    assert len(rows) >= 9
    columns = AuditEvent.__table__.columns.keys()
    for row in rows:
        for column in columns:
            value = str(getattr(row, column))
            assert not any(secret in value for secret in secrets), (column, value)
    listed = client.get(URL, headers=auth).text
    assert not any(secret in listed for secret in secrets)


def test_the_event_commits_with_the_change_or_not_at_all(services, project, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("the audit log is broken")

    monkeypatch.setattr(audit, "record", broken)
    with pytest.raises(RuntimeError):
        services.registries.create(project.id, HUB)
    with services.db.read() as session:
        kinds = session.scalars(
            select(ContainerRegistry.registry_type).where(
                ContainerRegistry.project_id == project.id
            )
        )
        assert "docker_hub" not in set(kinds)


def test_concurrent_callers_are_each_recorded_as_themselves(client, services, project, auth):
    """The caller is request-scoped (a context variable): never another request's."""
    other = create_project(services.db, "Globex")
    callers = {
        token_id(services, project): auth,
        token_id(services, other): {"Authorization": f"Bearer {other.api_token}"},
    }

    def create(headers: dict[str, str]) -> int:
        return client.post(REGISTRIES, json=HUB, headers=headers).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(create, [headers for headers in callers.values()] * 6))
    assert statuses == [200] * 12
    rows = all_rows(services)
    assert len(rows) == 12
    owners = {token_id(services, project): project.id, token_id(services, other): other.id}
    for row in rows:
        assert row.actor_type == "api_token"
        assert owners[row.actor] == row.project_id


def test_a_refused_change_records_nothing(client, services, auth):
    assert client.post(REGISTRIES, json={"name": ""}, headers=auth).status_code == 400
    missing = f"{REGISTRIES}/{uuid.uuid4()}"
    assert client.patch(missing, json={"name": "x"}, headers=auth).status_code == 404
    assert all_rows(services) == []


def test_changes_without_a_request_are_recorded_as_local(services, project):
    view = services.registries.create(project.id, HUB)
    [row] = all_rows(services)
    assert (row.action, row.actor_type, row.actor, row.source) == (
        "registry.created",
        "local",
        None,
        None,
    )
    assert row.registry_id == view.id and row.project_id == project.id


def test_an_explicit_actor_wins(services, project):
    who = audit.Actor("api_token", "token-id", "192.0.2.1")
    services.registries.create(project.id, HUB, actor=who)
    [row] = all_rows(services)
    assert (row.actor_type, row.actor, row.source) == ("api_token", "token-id", "192.0.2.1")
