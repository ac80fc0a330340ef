"""GET/POST/PATCH/DELETE /v1/container_registries and GET /v1/regions."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from dockyard.db.models import ContainerRegistry

URL = "/v1/container_registries"
FIELDS = {
    "id",
    "status",
    "registry_type",
    "name",
    "hostname",
    "has_credentials",
    "region_id",
    "created_at",
    "updated_at",
}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}$")
FRA = {"slug": "fra", "name": "Frankfurt, DE"}
AMS = {"slug": "ams", "name": "Amsterdam, NL"}


def assert_shape(obj: dict) -> None:
    assert set(obj) == FIELDS
    assert str(uuid.UUID(obj["id"])) == obj["id"]
    assert obj["status"] == "available"
    assert isinstance(obj["has_credentials"], bool)
    for key in ("created_at", "updated_at"):
        assert TIMESTAMP.match(obj[key]), obj[key]
    if obj["registry_type"] == "nodion":
        assert str(uuid.UUID(obj["region_id"])) == obj["region_id"]
    else:
        assert obj["region_id"] is None


def listing(client, auth) -> list[dict]:
    response = client.get(URL, headers=auth)
    assert response.status_code == 200
    assert set(response.json()) == {"container_registries"}
    registries = response.json()["container_registries"]
    for registry in registries:
        assert_shape(registry)
    return registries


def create(client, auth, **fields) -> dict:
    response = client.post(URL, json=fields, headers=auth)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"container_registry"}
    registry = response.json()["container_registry"]
    assert_shape(registry)
    return registry


def refused(response, status: int = 400) -> list[str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors"}
    assert body["errors"]
    assert all(isinstance(sentence, str) and sentence for sentence in body["errors"])
    return body["errors"]


# -- managed registries --------------------------------------------------------------------


def test_without_regions_there_is_one_local_managed_registry(client, auth):
    [registry] = listing(client, auth)
    assert registry["registry_type"] == "nodion"
    assert registry["name"] == "Nodion Registry (Local)"
    assert registry["hostname"] == "localhost:5000"
    assert registry["has_credentials"] is False
    assert registry["created_at"].endswith("+00:00")


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [("0.0.0.0", 8080, "localhost:8080"), ("registry.internal", 5000, "registry.internal:5000")],
)
def test_local_region_hostname_is_the_listen_address(make_client, auth, host, port, expected):
    [registry] = listing(make_client(host=host, port=port), auth)
    assert registry["hostname"] == expected


def test_managed_registry_of_every_region_first_then_external_oldest_first(make_client, auth):
    client = make_client(regions=[FRA, AMS], registry_domain="nodion.net")
    first = create(client, auth, name="First", registry_type="docker_hub")
    second = create(client, auth, name="Second", registry_type="ghcr")
    third = create(client, auth, name="Third", registry_type="custom", hostname="cr.example.com")

    registries = listing(client, auth)

    assert [(r["registry_type"], r["name"], r["hostname"]) for r in registries[:2]] == [
        ("nodion", "Nodion Registry (Frankfurt, DE)", "registry.fra.nodion.net"),
        ("nodion", "Nodion Registry (Amsterdam, NL)", "registry.ams.nodion.net"),
    ]
    assert [r["id"] for r in registries[2:]] == [first["id"], second["id"], third["id"]]


def test_managed_hostname_from_region_setting_then_registry_domain(make_client, auth):
    fra = {**FRA, "hostname": "cr.fra.example.org"}
    client = make_client(regions=[fra, AMS], registry_domain="example.net")
    hostnames = [r["hostname"] for r in listing(client, auth)]
    assert hostnames == ["cr.fra.example.org", "registry.ams.example.net"]


def test_managed_name_uses_platform_name(make_client, auth):
    client = make_client(regions=[FRA], platform_name="Acme Cloud")
    [registry] = listing(client, auth)
    assert registry["name"] == "Acme Cloud Registry (Frankfurt, DE)"
    assert registry["registry_type"] == "nodion"


def test_region_added_later_gets_its_managed_registry(make_client, auth):
    [fra] = listing(make_client(regions=[FRA], registry_domain="nodion.net"), auth)

    both = listing(make_client(regions=[FRA, AMS], registry_domain="nodion.net"), auth)

    assert [r["name"] for r in both] == [
        "Nodion Registry (Frankfurt, DE)",
        "Nodion Registry (Amsterdam, NL)",
    ]
    assert both[0]["id"] == fra["id"]
    assert both[0]["created_at"] == fra["created_at"]
    assert both[1]["id"] != fra["id"]


def test_regions_match_the_managed_registries(make_client, auth):
    client = make_client(regions=[FRA, AMS], registry_domain="nodion.net")
    response = client.get("/v1/regions", headers=auth)
    assert response.status_code == 200
    assert set(response.json()) == {"regions"}
    regions = response.json()["regions"]
    for region in regions:
        assert set(region) == {"id", "status", "name", "slug"}
        assert region["status"] == "available"
    assert [(r["slug"], r["name"]) for r in regions] == [
        ("fra", "Frankfurt, DE"),
        ("ams", "Amsterdam, NL"),
    ]
    assert [r["id"] for r in regions] == [r["region_id"] for r in listing(client, auth)]


def test_get_answers_what_the_list_shows(client, auth):
    create(client, auth, name="Hub", registry_type="docker_hub", username="u", password="p")
    for registry in listing(client, auth):
        response = client.get(f"{URL}/{registry['id']}", headers=auth)
        assert response.status_code == 200
        assert response.json() == {"container_registry": registry}


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (datetime(2025, 1, 15, 9, 0, tzinfo=UTC), "2025-01-15T10:00:00.000+01:00"),
        (datetime(2025, 7, 15, 8, 0, 0, 123456, tzinfo=UTC), "2025-07-15T10:00:00.123+02:00"),
    ],
)
def test_timestamps_are_shown_in_the_configured_zone(
    make_client, services, auth, instant, expected
):
    client = make_client(timezone="Europe/Berlin")
    [managed] = listing(client, auth)
    external = create(client, auth, name="Hub", registry_type="docker_hub")
    with services.db.write() as session:
        session.execute(update(ContainerRegistry).values(created_at=instant, updated_at=instant))

    for registry_id in (managed["id"], external["id"]):
        shown = client.get(f"{URL}/{registry_id}", headers=auth).json()["container_registry"]
        assert shown["created_at"] == expected
        assert shown["updated_at"] == expected


# -- create --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry_type", "hostname"), [("docker_hub", "docker.io"), ("ghcr", "ghcr.io")]
)
def test_create_defaults_the_hostname(client, auth, registry_type, hostname):
    registry = create(client, auth, name="Mine", registry_type=registry_type)
    assert registry["hostname"] == hostname
    assert registry["registry_type"] == registry_type
    assert registry["has_credentials"] is False
    assert registry["created_at"] == registry["updated_at"]


def test_create_custom_with_credentials(client, auth):
    registry = create(
        client,
        auth,
        name="  Company registry  ",
        registry_type="custom",
        hostname="Registry.Example.com:5000",
        username="deploy",
        password="s3cret",
    )
    assert registry["name"] == "Company registry"
    assert registry["hostname"] == "registry.example.com:5000"
    assert registry["has_credentials"] is True
    assert listing(client, auth)[-1] == registry
    assert client.get(f"{URL}/{registry['id']}", headers=auth).json() == {
        "container_registry": registry
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ["Name can't be blank", "Registry type can't be blank"]),
        ({"name": "   ", "registry_type": "docker_hub"}, ["Name can't be blank"]),
        ({"name": "x" * 256, "registry_type": "docker_hub"}, ["Name is too long"]),
        ({"name": "N", "registry_type": "nodion"}, ["nodion can't be created"]),
        ({"name": "N", "registry_type": "quay"}, ["must be one of docker_hub, ghcr, custom"]),
        ({"name": "N", "registry_type": "custom"}, ["Hostname can't be blank"]),
        ({"name": "N", "registry_type": "custom", "hostname": "https://x.io"}, ["scheme"]),
        ({"name": "N", "registry_type": "custom", "hostname": "x.io/v2"}, ["path"]),
        ({"name": "N", "registry_type": "custom", "hostname": "x .io"}, ["spaces"]),
        ({"name": "N", "registry_type": "custom", "hostname": "x.io:0"}, ["port"]),
        ({"name": "N", "registry_type": "docker_hub", "username": "u"}, ["together"]),
        ({"name": "N", "registry_type": "docker_hub", "password": "p"}, ["together"]),
    ],
)
def test_create_refusals_say_why_and_change_nothing(client, auth, fields, expected):
    before = listing(client, auth)
    errors = refused(client.post(URL, json=fields, headers=auth))
    assert len(errors) == len(expected)
    for sentence, fragment in zip(errors, expected, strict=True):
        assert fragment in sentence
    assert listing(client, auth) == before


def test_create_reports_every_problem_at_once(client, auth):
    fields = {"registry_type": "custom", "hostname": "https://x.io", "username": "u"}
    errors = refused(client.post(URL, json=fields, headers=auth))
    assert len(errors) == 3
    assert "Name can't be blank" in errors[0]
    assert "scheme" in errors[1]
    assert "together" in errors[2]


# -- update --------------------------------------------------------------------------------


def patch(client, auth, registry_id: str, **fields):
    return client.patch(f"{URL}/{registry_id}", json=fields, headers=auth)


def test_update_changes_only_what_is_sent(client, auth):
    old = create(client, auth, name="Old", registry_type="docker_hub", username="u", password="p")
    time.sleep(0.01)
    response = patch(client, auth, old["id"], name="New")
    assert response.status_code == 200
    new = response.json()["container_registry"]
    assert_shape(new)
    assert new["name"] == "New"
    assert {k: new[k] for k in FIELDS - {"name", "updated_at"}} == {
        k: old[k] for k in FIELDS - {"name", "updated_at"}
    }
    assert new["updated_at"] > old["updated_at"]
    assert client.get(f"{URL}/{old['id']}", headers=auth).json() == {"container_registry": new}


def test_update_hostname(client, auth):
    registry = create(client, auth, name="C", registry_type="custom", hostname="a.example.com")
    response = patch(client, auth, registry["id"], hostname="[2001:db8::1]:5000")
    assert response.status_code == 200
    assert response.json()["container_registry"]["hostname"] == "[2001:db8::1]:5000"


def test_stored_credentials_never_follow_a_new_hostname(client, auth):
    """Else a caller who may PATCH but never sees the password could point the hostname at
    a server of theirs and have the registry check hand it over."""
    registry = create(
        client,
        auth,
        name="C",
        registry_type="custom",
        hostname="a.example.com",
        username="u",
        password="p",
    )
    errors = refused(patch(client, auth, registry["id"], hostname="evil.example.com"))
    assert any("sent again" in e for e in errors)
    shown = client.get(f"{URL}/{registry['id']}", headers=auth).json()["container_registry"]
    assert shown == registry  # nothing changed

    moved = patch(
        client, auth, registry["id"], hostname="b.example.com", username="u", password="p"
    )
    assert moved.status_code == 200, moved.text
    cleared = patch(
        client, auth, registry["id"], hostname="c.example.com", username=None, password=None
    )
    assert cleared.json()["container_registry"]["has_credentials"] is False
    renamed = patch(client, auth, registry["id"], hostname="c.example.com", name="same host")
    assert renamed.status_code == 200  # the same hostname again is no change


@pytest.mark.parametrize("empty", [None, ""])
def test_update_clears_and_sets_credentials(client, auth, empty):
    registry = create(client, auth, name="H", registry_type="ghcr", username="u", password="p")
    cleared = patch(client, auth, registry["id"], username=empty, password=empty)
    assert cleared.status_code == 200
    assert cleared.json()["container_registry"]["has_credentials"] is False

    errors = refused(patch(client, auth, registry["id"], username="only-user"))
    assert any("together" in e for e in errors)

    again = patch(client, auth, registry["id"], username="u2", password="p2")
    assert again.json()["container_registry"]["has_credentials"] is True


def test_update_refusals_change_nothing(client, auth):
    registry = create(client, auth, name="C", registry_type="custom", hostname="a.example.com")
    cases = [
        ({"registry_type": "ghcr"}, "can't be changed"),
        ({"hostname": "https://b.example.com"}, "scheme"),
        ({"hostname": ""}, "Hostname can't be blank"),
        ({"name": ""}, "Name can't be blank"),
        ({"password": "p"}, "together"),
    ]
    for fields, fragment in cases:
        errors = refused(patch(client, auth, registry["id"], **fields))
        assert fragment in " ".join(errors), fields
    assert client.get(f"{URL}/{registry['id']}", headers=auth).json() == {
        "container_registry": registry
    }


def test_update_with_the_same_registry_type_is_fine(client, auth):
    registry = create(client, auth, name="H", registry_type="docker_hub")
    response = patch(client, auth, registry["id"], registry_type="docker_hub", name="H2")
    assert response.status_code == 200
    assert response.json()["container_registry"]["name"] == "H2"


def test_managed_registry_cannot_be_updated_or_deleted(client, auth):
    [managed] = listing(client, auth)
    for response in (
        patch(client, auth, managed["id"], name="Mine now"),
        client.delete(f"{URL}/{managed['id']}", headers=auth),
    ):
        [sentence] = refused(response)
        assert "managed by the platform" in sentence
    assert listing(client, auth) == [managed]


# -- delete --------------------------------------------------------------------------------


def test_delete_answers_the_last_state_and_then_it_is_gone(client, auth):
    keep = create(client, auth, name="Keep", registry_type="ghcr")
    gone = create(client, auth, name="Gone", registry_type="docker_hub", username="u", password="p")

    response = client.delete(f"{URL}/{gone['id']}", headers=auth)

    assert response.status_code == 200
    assert response.json() == {"container_registry": gone}
    assert [r["id"] for r in listing(client, auth)][1:] == [keep["id"]]
    refused(client.get(f"{URL}/{gone['id']}", headers=auth), 404)
    refused(client.delete(f"{URL}/{gone['id']}", headers=auth), 404)
