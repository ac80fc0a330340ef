"""POST and DELETE /v1/container_registries/:id/credentials: robot accounts."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
from sqlalchemy import func, select

from dockyard.app import create_app
from dockyard.db.models import RobotAccount

URL = "/v1/container_registries"
USERNAME = re.compile(r"^robot\$project-[0-9a-f]{8}$")


def managed(client, auth) -> dict:
    registries = client.get(URL, headers=auth).json()["container_registries"]
    assert registries[0]["registry_type"] == "nodion"
    return registries[0]


def external(client, auth) -> dict:
    fields = {"name": "Hub", "registry_type": "docker_hub", "username": "u", "password": "p"}
    response = client.post(URL, json=fields, headers=auth)
    assert response.status_code == 200
    return response.json()["container_registry"]


def generate(client, auth, registry_id: str) -> httpx.Response:
    return client.post(f"{URL}/{registry_id}/credentials", headers=auth)


def revoke(client, auth, registry_id: str) -> httpx.Response:
    return client.delete(f"{URL}/{registry_id}/credentials", headers=auth)


def one_error(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"errors"}
    [sentence] = body["errors"]
    return sentence


def test_generate_answers_201_with_exactly_the_spec_fields(client, auth):
    registry = managed(client, auth)

    response = generate(client, auth, registry["id"])

    assert response.status_code == 201
    assert set(response.json()) == {"container_registry"}
    created = response.json()["container_registry"]
    assert set(created) == {"id", "hostname", "username", "password"}
    assert created["id"] == registry["id"]
    assert created["hostname"] == registry["hostname"]
    assert USERNAME.match(created["username"]), created["username"]
    assert isinstance(created["password"], str)
    assert len(created["password"]) >= 32


def test_after_generating_the_registry_shows_credentials_but_never_the_password(client, auth):
    registry = managed(client, auth)
    password = generate(client, auth, registry["id"]).json()["container_registry"]["password"]

    listed = client.get(URL, headers=auth)
    shown = client.get(f"{URL}/{registry['id']}", headers=auth)

    assert listed.json()["container_registries"][0]["has_credentials"] is True
    assert shown.json()["container_registry"]["has_credentials"] is True
    assert shown.json()["container_registry"]["id"] == registry["id"]
    assert password not in listed.text
    assert password not in shown.text


def test_generating_changes_updated_at_but_not_created_at(client, auth):
    registry = managed(client, auth)
    time.sleep(0.01)
    generate(client, auth, registry["id"])
    after = client.get(f"{URL}/{registry['id']}", headers=auth).json()["container_registry"]
    assert after["created_at"] == registry["created_at"]
    assert after["updated_at"] > registry["updated_at"]


def test_robot_prefix_setting(make_client, auth):
    client = make_client(robot_prefix="robot_")
    created = generate(client, auth, managed(client, auth)["id"]).json()["container_registry"]
    assert re.match(r"^robot_project-[0-9a-f]{8}$", created["username"]), created["username"]


def test_every_region_gets_its_own_robot(make_client, auth):
    regions = [{"slug": "fra", "name": "Frankfurt, DE"}, {"slug": "ams", "name": "Amsterdam, NL"}]
    client = make_client(regions=regions, registry_domain="nodion.net")
    registries = client.get(URL, headers=auth).json()["container_registries"]
    made = [generate(client, auth, r["id"]).json()["container_registry"] for r in registries]
    assert [m["hostname"] for m in made] == ["registry.fra.nodion.net", "registry.ams.nodion.net"]
    assert made[0]["username"] != made[1]["username"]
    assert made[0]["password"] != made[1]["password"]


def test_second_generate_is_refused(client, auth):
    registry = managed(client, auth)
    first = generate(client, auth, registry["id"])
    assert first.status_code == 201

    sentence = one_error(generate(client, auth, registry["id"]))

    assert "already exist" in sentence
    assert first.json()["container_registry"]["password"] not in sentence
    assert client.get(f"{URL}/{registry['id']}", headers=auth).json()["container_registry"][
        "has_credentials"
    ]


def test_external_registry_has_no_robot(client, auth):
    registry = external(client, auth)
    assert "can only be generated" in one_error(generate(client, auth, registry["id"]))
    refusal = one_error(revoke(client, auth, registry["id"]))
    assert "can only be deleted" in refusal
    assert "external" in refusal
    after = client.get(f"{URL}/{registry['id']}", headers=auth).json()["container_registry"]
    assert after == registry


def test_twenty_concurrent_generates_make_exactly_one_robot(settings, services, auth):
    app = create_app(settings, services)

    async def race() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dockyard") as http:
            listed = await http.get(URL, headers=auth)
            registry_id = listed.json()["container_registries"][0]["id"]
            calls = [http.post(f"{URL}/{registry_id}/credentials", headers=auth) for _ in range(20)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(race())

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [400] * 19, [r.text for r in responses if r.status_code >= 500]
    for response in responses:
        if response.status_code == 400:
            assert "already exist" in response.json()["errors"][0]
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(RobotAccount)) == 1
        [username] = session.scalars(select(RobotAccount.username))
    [winner] = [r for r in responses if r.status_code == 201]
    assert winner.json()["container_registry"]["username"] == username


def test_delete_credentials_then_generate_new_ones(client, auth):
    registry = managed(client, auth)
    first = generate(client, auth, registry["id"]).json()["container_registry"]

    response = revoke(client, auth, registry["id"])

    assert response.status_code == 200
    assert set(response.json()) == {"container_registry"}
    shown = response.json()["container_registry"]
    assert set(shown) == set(registry)
    assert shown["id"] == registry["id"]
    assert shown["registry_type"] == "nodion"
    assert shown["has_credentials"] is False
    assert first["password"] not in response.text
    assert client.get(f"{URL}/{registry['id']}", headers=auth).json() == response.json()

    second = generate(client, auth, registry["id"])
    assert second.status_code == 201
    assert second.json()["container_registry"]["password"] != first["password"]
    assert USERNAME.match(second.json()["container_registry"]["username"])


def test_delete_credentials_when_there_are_none(client, auth):
    registry = managed(client, auth)
    assert "no credentials" in one_error(revoke(client, auth, registry["id"]))
    generate(client, auth, registry["id"])
    assert revoke(client, auth, registry["id"]).status_code == 200
    assert "no credentials" in one_error(revoke(client, auth, registry["id"]))
