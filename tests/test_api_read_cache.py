"""Repeated reads of the registry list come from memory, and never say anything stale."""

from __future__ import annotations

import time

from sqlalchemy import event, update

from dockyard.db import Database
from dockyard.db.changes import NoChangeFeed
from dockyard.db.models import ContainerRegistry
from dockyard.domain.projects import create_project, create_token, revoke_token

URL = "/v1/container_registries"
HUB = {"name": "Hub", "registry_type": "docker_hub"}
NOTIFY_DEADLINE_SECONDS = 5.0


def names(client, auth) -> list[str]:
    response = client.get(URL, headers=auth)
    assert response.status_code == 200, response.text
    return [r["name"] for r in response.json()["container_registries"]]


def test_a_repeated_list_does_not_touch_the_database(client, auth, statements) -> None:
    first = client.get(URL, headers=auth)
    assert first.status_code == 200
    client.get(URL, headers=auth)  # the first may have created the managed registries
    statements.clear()

    again = client.get(URL, headers=auth)

    assert statements == []
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["content-length"] == str(len(first.content))


def test_every_change_shows_in_the_very_next_list(client, auth) -> None:
    names(client, auth)
    created = client.post(URL, json=HUB, headers=auth).json()["container_registry"]
    assert "Hub" in names(client, auth)

    client.patch(f"{URL}/{created['id']}", json={"name": "Renamed"}, headers=auth)
    assert "Renamed" in names(client, auth)

    managed = client.get(URL, headers=auth).json()["container_registries"][0]
    assert managed["has_credentials"] is False
    client.post(f"{URL}/{managed['id']}/credentials", headers=auth)
    assert client.get(URL, headers=auth).json()["container_registries"][0]["has_credentials"]

    client.delete(f"{URL}/{created['id']}", headers=auth)
    assert "Renamed" not in names(client, auth)


def test_a_change_from_outside_the_server_shows(client, services, project, auth) -> None:
    """A commit the HTTP layer never saw (another replica, the admin CLI) still counts: at
    once on SQLite, whose data_version is read on every request; on PostgreSQL as soon as
    the NOTIFY reaches the listener thread, which is asynchronous by nature."""
    client.post(URL, json=HUB, headers=auth)
    names(client, auth)
    names(client, auth)
    elsewhere = Database(services.db.url)
    with elsewhere.write() as session:
        session.execute(
            update(ContainerRegistry)
            .where(ContainerRegistry.project_id == project.id, ContainerRegistry.name == "Hub")
            .values(name="Edited elsewhere")
        )
    elsewhere.dispose()
    if services.db.is_sqlite:
        assert "Edited elsewhere" in names(client, auth)
        return
    deadline = time.monotonic() + NOTIFY_DEADLINE_SECONDS
    while "Edited elsewhere" not in names(client, auth):
        assert time.monotonic() < deadline, "the other connection's commit never showed"
        time.sleep(0.01)


def test_each_token_and_project_gets_its_own_answer(client, services, project, auth) -> None:
    client.post(URL, json=HUB, headers=auth)
    other = create_project(services.db, "Other")
    other_auth = {"Authorization": f"Bearer {other.api_token}"}
    _, second = create_token(services.db, str(project.id))
    second_auth = {"Authorization": f"Bearer {second}"}
    for _ in range(2):  # the second round is served from memory
        assert "Hub" in names(client, auth)
        assert "Hub" in names(client, second_auth)
        assert "Hub" not in names(client, other_auth)


def test_a_refusal_is_not_remembered(client, services, project, auth) -> None:
    _, second = create_token(services.db, str(project.id))
    second_auth = {"Authorization": f"Bearer {second}"}
    names(client, second_auth)
    revoke_token(services.db, second)
    assert client.get(URL, headers=second_auth).status_code == 401
    assert client.get(URL, headers=second_auth).status_code == 401
    assert client.get(URL, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get(URL, headers=auth).status_code == 200


def test_the_cache_can_be_turned_off(make_client, project, auth) -> None:
    client = make_client(read_cache=False)
    services = client.app.state.services
    client.get(URL, headers=auth)
    client.get(URL, headers=auth)
    sent: list[str] = []
    event.listen(services.db.engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    assert client.get(URL, headers=auth).status_code == 200
    assert sent, "with read_cache=false every list reads the database"
    assert isinstance(services.changes, NoChangeFeed)
