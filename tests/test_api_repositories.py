"""Browsing a managed registry through /v1: what was pushed through /v2, with its numbers."""

from __future__ import annotations

import os
from datetime import datetime
from urllib.parse import quote

import pytest

from dockyard.domain.projects import create_project
from tests.oci_client import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    OCIClient,
    descriptor,
    encode,
    generate_credentials,
    image_manifest,
    sha256,
)

URL = "/v1/container_registries"
CONFIG = b'{"architecture":"amd64","os":"linux"}'
TIME_FIELDS = ("created_at", "last_pushed_at", "pushed_at")


def repositories(client, auth, registry_id: str, **params):
    return client.get(f"{URL}/{registry_id}/repositories", headers=auth, params=params)


def tags(client, auth, registry_id: str, name: str, **params):
    return client.get(f"{URL}/{registry_id}/repositories/{name}/tags", headers=auth, params=params)


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


def one_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors"}, body
    [sentence] = body["errors"]
    assert isinstance(sentence, str) and sentence, body
    return str(sentence)


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


class Pushed:
    """Two repositories sharing a layer and the config; the sizes every test expects."""

    def __init__(self, oci: OCIClient, project_id: str) -> None:
        self.app = f"{project_id}/team/app"
        self.other = f"{project_id}/other"
        self.shared, self.own1, self.own2 = os.urandom(300), os.urandom(200), os.urandom(100)
        self.m1, self.d1 = oci.push_image(self.app, "v1", layers=[self.shared, self.own1])
        self.m2, self.d2 = oci.push_image(
            self.app, "v2", layers=[self.shared, self.own2], media_type=DOCKER_MANIFEST
        )
        self.m3, self.d3 = oci.push_image(self.other, "latest", layers=[self.shared])
        blobs = len(CONFIG) + 300 + 200 + 100
        self.app_size = blobs + len(self.m1) + len(self.m2)
        self.other_size = len(CONFIG) + 300 + len(self.m3)
        self.storage = blobs + len(self.m1) + len(self.m2) + len(self.m3)


@pytest.fixture
def pushed(oci, robot) -> Pushed:
    return Pushed(oci, robot.project_id)


# -- the numbers ----------------------------------------------------------------------------


def test_repositories_are_listed_by_name_with_the_pushed_numbers(client, auth, robot, pushed):
    body = ok(repositories(client, auth, robot.registry_id))

    assert set(body) == {"repositories", "storage_used_bytes", "meta"}
    assert body["meta"] == {"page": 1, "per_page": 25, "total": 2}
    other, app = body["repositories"]  # "<id>/other" < "<id>/team/app"
    assert (app["name"], app["tag_count"], app["size_bytes"]) == (pushed.app, 2, pushed.app_size)
    assert (other["name"], other["tag_count"], other["size_bytes"]) == (
        pushed.other,
        1,
        pushed.other_size,
    )
    # The layer and config both repositories hold count once for the registry.
    assert body["storage_used_bytes"] == pushed.storage < pushed.app_size + pushed.other_size
    for repository in (app, other):
        assert set(repository) == {
            "name",
            "tag_count",
            "size_bytes",
            "last_pushed_at",
            "created_at",
        }
        assert moment(repository["created_at"]) <= moment(repository["last_pushed_at"])
        assert repository["created_at"].endswith("+00:00")
    assert moment(app["last_pushed_at"]) <= moment(other["last_pushed_at"])  # pushed in order


def test_tags_carry_the_pushed_digest_media_type_and_size(client, auth, robot, pushed):
    body = ok(tags(client, auth, robot.registry_id, pushed.app))

    assert (
        body["repository"] == ok(repositories(client, auth, robot.registry_id))["repositories"][1]
    )
    assert body["meta"] == {"page": 1, "per_page": 25, "total": 2}
    v1, v2 = body["tags"]
    assert set(v1) == {"name", "digest", "media_type", "size_bytes", "pushed_at"}
    assert (v1["name"], v1["digest"], v1["media_type"]) == ("v1", pushed.d1, OCI_MANIFEST)
    assert (v2["name"], v2["digest"], v2["media_type"]) == ("v2", pushed.d2, DOCKER_MANIFEST)
    assert v1["size_bytes"] == len(pushed.m1) + len(CONFIG) + 300 + 200
    assert v2["size_bytes"] == len(pushed.m2) + len(CONFIG) + 300 + 100
    assert moment(v1["pushed_at"]) < moment(v2["pushed_at"])
    assert body["repository"]["last_pushed_at"] == v2["pushed_at"]


def test_an_index_counts_itself_its_children_and_their_distinct_blobs(
    client, auth, robot, oci, pushed
):
    arm = os.urandom(150)
    assert oci.push_blob(pushed.app, arm).status_code == 201
    m4 = encode(image_manifest(CONFIG, [pushed.shared, arm]))
    d4 = sha256(m4)
    assert oci.push_manifest(pushed.app, d4, m4, OCI_MANIFEST).status_code == 201  # untagged
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, pushed.m1), descriptor(OCI_MANIFEST, m4)],
    }
    assert oci.push_manifest(pushed.app, "multi", index).status_code == 201

    listed = {
        tag["name"]: tag for tag in ok(tags(client, auth, robot.registry_id, pushed.app))["tags"]
    }

    blobs = len(CONFIG) + 300 + 200 + 150  # the shared layer and config once
    assert listed["multi"]["media_type"] == OCI_INDEX
    assert listed["multi"]["size_bytes"] == len(encode(index)) + len(pushed.m1) + len(m4) + blobs
    assert d4 not in {tag["digest"] for tag in listed.values()}


def test_moving_a_tag_moves_its_numbers(client, auth, robot, oci, pushed):
    before = ok(tags(client, auth, robot.registry_id, pushed.other))["tags"][0]
    content, digest = oci.push_image(pushed.other, "latest", layers=[os.urandom(1000)])

    after = ok(tags(client, auth, robot.registry_id, pushed.other))
    [tag] = after["tags"]
    assert tag["digest"] == digest != before["digest"]
    assert tag["size_bytes"] == len(content) + len(CONFIG) + 1000
    assert moment(tag["pushed_at"]) > moment(before["pushed_at"])
    # The old manifest and layer are still held (pullable by digest) until collected.
    repository = after["repository"]
    assert repository["tag_count"] == 1
    assert repository["size_bytes"] == pushed.other_size + len(content) + 1000


def test_an_empty_registry_and_a_repository_with_blobs_only(client, auth, robot, oci):
    assert ok(repositories(client, auth, robot.registry_id)) == {
        "repositories": [],
        "storage_used_bytes": 0,
        "meta": {"page": 1, "per_page": 25, "total": 0},
    }
    name = f"{robot.project_id}/half"
    assert oci.push_blob(name, b"a layer without a manifest yet").status_code == 201

    [repository] = ok(repositories(client, auth, robot.registry_id))["repositories"]
    assert (repository["tag_count"], repository["size_bytes"]) == (0, 30)
    assert repository["last_pushed_at"] is None
    assert ok(tags(client, auth, robot.registry_id, name))["tags"] == []


# -- pages ----------------------------------------------------------------------------------


def test_repositories_and_tags_come_a_page_at_a_time(client, auth, robot, oci):
    names = [f"{robot.project_id}/r{i}" for i in range(5)]
    for name in names:
        assert oci.push_blob(name, name.encode()).status_code == 201
    for tag in ("c", "a", "b"):
        oci.push_image(names[0], tag)

    pages = [
        ok(repositories(client, auth, robot.registry_id, page=p, per_page=2)) for p in (1, 2, 3, 4)
    ]
    assert [[r["name"] for r in page["repositories"]] for page in pages] == [
        names[0:2],
        names[2:4],
        names[4:5],
        [],
    ]
    assert {page["meta"]["total"] for page in pages} == {5}
    assert pages[3]["meta"] == {"page": 4, "per_page": 2, "total": 5}
    tag_pages = [
        ok(tags(client, auth, robot.registry_id, names[0], page=p, per_page=2)) for p in (1, 2)
    ]
    assert [[t["name"] for t in page["tags"]] for page in tag_pages] == [["a", "b"], ["c"]]
    assert tag_pages[1]["meta"] == {"page": 2, "per_page": 2, "total": 3}


@pytest.mark.parametrize(
    "params", [{"page": 0}, {"per_page": 0}, {"per_page": 101}, {"page": 1_000_001}, {"page": "x"}]
)
def test_pages_out_of_range_are_refused_with_a_sentence(client, auth, robot, oci, params):
    name = f"{robot.project_id}/app"
    oci.push_image(name, "v1")
    for response in (
        repositories(client, auth, robot.registry_id, **params),
        tags(client, auth, robot.registry_id, name, **params),
    ):
        sentence = one_error(response, 400)
        assert next(iter(params)) in sentence


# -- names with slashes ---------------------------------------------------------------------


def test_a_name_with_slashes_is_written_plain_encoded_or_encoded_twice(client, auth, robot, oci):
    name = f"{robot.project_id}/team/web/app"
    _, digest = oci.push_image(name, "v1")
    for spelled in (name, quote(name, safe=""), quote(quote(name, safe=""), safe="")):
        body = ok(tags(client, auth, robot.registry_id, spelled))
        assert body["repository"]["name"] == name, spelled
        assert [tag["digest"] for tag in body["tags"]] == [digest]
        one = ok(client.get(f"{URL}/{robot.registry_id}/repositories/{spelled}", headers=auth))
        assert one == {"repository": body["repository"]}


def test_names_ending_in_tags_are_reached_by_encoding_twice(client, auth, robot, oci):
    p = robot.project_id
    oci.push_image(f"{p}/app", "v1")
    oci.push_image(f"{p}/app/tags", "x")
    oci.push_image(f"{p}/app/tags/v1", "y")

    # The longest name that leaves the suffix: `<p>/app/tags` + `/tags`.
    body = ok(tags(client, auth, robot.registry_id, f"{p}/app/tags"))
    assert (body["repository"]["name"], [t["name"] for t in body["tags"]]) == (
        f"{p}/app/tags",
        ["x"],
    )
    # `.../app/tags` alone is the tag listing of `<p>/app`; encoded twice, the repository.
    plain = ok(client.get(f"{URL}/{robot.registry_id}/repositories/{p}/app/tags", headers=auth))
    assert plain["repository"]["name"] == f"{p}/app"
    twice = quote(quote(f"{p}/app/tags/v1", safe=""), safe="")
    one = ok(client.get(f"{URL}/{robot.registry_id}/repositories/{twice}", headers=auth))
    assert one["repository"]["name"] == f"{p}/app/tags/v1"


# -- refusals -------------------------------------------------------------------------------


def routes(registry_id: str, name: str, tag: str = "v1") -> list[tuple[str, str]]:
    base = f"{URL}/{registry_id}/repositories"
    return [
        ("GET", f"{base}/{name}/tags"),
        ("GET", f"{base}/{name}"),
        ("DELETE", f"{base}/{name}/tags/{tag}"),
        ("DELETE", f"{base}/{name}"),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "{p}/Upper",
        "{p}/%2E%2E/x",
        "{p}/a//b",
        "{p}/-a",
        "{p}/%FF",
        "{p}/a%25FF",
        "{p}/" + "a" * 260,
        "{p}/caf%C3%A9",
    ],
)
def test_an_invalid_name_is_a_400_that_says_what_a_name_is(client, auth, robot, oci, pushed, name):
    before = ok(repositories(client, auth, robot.registry_id))
    for method, path in routes(robot.registry_id, name.format(p=robot.project_id)):
        sentence = one_error(client.request(method, path, headers=auth), 400)
        assert sentence.startswith("Repository name is invalid"), (method, path, sentence)
    assert ok(repositories(client, auth, robot.registry_id)) == before


def test_a_name_with_a_newline_matches_no_route(client, auth, robot, pushed):
    """Starlette's path parameters stop at a newline: no route, a 404 that says so."""
    for method, path in routes(robot.registry_id, f"{robot.project_id}/a%0Ab"):
        assert one_error(client.request(method, path, headers=auth), 404).startswith(
            "No such endpoint"
        )


@pytest.mark.parametrize("tag", ["-x", ".x", "a" * 129, "a%0A", "a:b", "%FF"])
def test_an_invalid_tag_is_a_400(client, auth, robot, pushed, tag):
    before = ok(tags(client, auth, robot.registry_id, pushed.app))
    path = f"{URL}/{robot.registry_id}/repositories/{pushed.app}/tags/{tag}"
    assert one_error(client.delete(path, headers=auth), 400).startswith("Tag is invalid")
    assert ok(tags(client, auth, robot.registry_id, pushed.app)) == before


def test_unknown_repositories_and_tags_are_404s_with_a_sentence(client, auth, robot, pushed):
    ghost = f"{robot.project_id}/ghost"
    for method, path in routes(robot.registry_id, ghost):
        sentence = one_error(client.request(method, path, headers=auth), 404)
        assert sentence == f"Repository {ghost} not found in this registry"
    path = f"{URL}/{robot.registry_id}/repositories/{pushed.app}/tags/nope"
    assert one_error(client.delete(path, headers=auth), 404) == (
        f"Tag nope not found in repository {pushed.app}"
    )


def test_a_neighbours_repository_named_in_my_registry_is_unknown(
    client, services, auth, robot, pushed
):
    neighbour = create_project(services.db, "Globex")
    theirs = generate_credentials(client, neighbour.api_token)
    their_oci = OCIClient(client, theirs["username"], theirs["password"])
    their_oci.push_image(f"{neighbour.id}/app", "v1")
    ghost = f"{neighbour.id}/ghost"
    for (method, real), (_, missing) in zip(
        routes(robot.registry_id, f"{neighbour.id}/app"),
        routes(robot.registry_id, ghost),
        strict=True,
    ):
        seen = client.request(method, real, headers=auth)
        assert one_error(seen, 404) == one_error(
            client.request(method, missing, headers=auth), 404
        ).replace(ghost, f"{neighbour.id}/app")
    their_auth = {"Authorization": f"Bearer {neighbour.api_token}"}
    listed = ok(repositories(client, their_auth, theirs["id"]))
    assert [r["name"] for r in listed["repositories"]] == [f"{neighbour.id}/app"]
    assert ok(repositories(client, auth, robot.registry_id))["meta"]["total"] == 2


def test_external_registries_cannot_be_browsed(client, auth):
    hub = {"name": "Hub", "registry_type": "docker_hub", "username": "me", "password": "pw"}
    created = client.post(URL, json=hub, headers=auth).json()["container_registry"]
    paths = [("GET", f"{URL}/{created['id']}/repositories"), *routes(created["id"], "x/app")]
    for method, path in paths:
        sentence = one_error(client.request(method, path, headers=auth), 400)
        assert "Only managed registries can be browsed" in sentence
        assert "docker_hub" in sentence and "docker.io" in sentence


def test_an_unknown_registry_is_a_404(client, auth, robot):
    expected = one_error(
        client.get(f"{URL}/{'0' * 8}-0000-0000-0000-{'0' * 12}", headers=auth), 404
    )
    for registry_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        paths = [("GET", f"{URL}/{registry_id}/repositories"), *routes(registry_id, "x/app")]
        for method, path in paths:
            assert one_error(client.request(method, path, headers=auth), 404) == expected


# -- regions --------------------------------------------------------------------------------


def test_each_regions_registry_lists_its_own_repositories(make_client, project, auth):
    regions = [{"slug": "fra", "name": "Frankfurt, DE"}, {"slug": "ams", "name": "Amsterdam, NL"}]
    client = make_client(regions=regions, registry_domain="nodion.net")
    fra, ams = client.get(URL, headers=auth).json()["container_registries"]
    robot = generate_credentials(client, project.api_token, ams["id"])
    oci = OCIClient(client, robot["username"], robot["password"], host=ams["hostname"])
    _, digest = oci.push_image(f"{project.id}/app", "v1")

    assert ok(repositories(client, auth, fra["id"]))["repositories"] == []
    [repository] = ok(repositories(client, auth, ams["id"]))["repositories"]
    assert repository["name"] == f"{project.id}/app"
    assert one_error(tags(client, auth, fra["id"], f"{project.id}/app"), 404)
    assert ok(tags(client, auth, ams["id"], f"{project.id}/app"))["tags"][0]["digest"] == digest
