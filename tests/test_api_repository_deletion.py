"""Deleting tags and repositories through /v1: what /v2 serves afterwards, what garbage
collection frees, and the audit log."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from urllib.parse import quote

import anyio
import pytest

from dockyard.domain.gc import GarbageCollector
from dockyard.domain.user_keys import create_key
from dockyard.domain.users import create_user
from dockyard.storage.paths import blob_key, upload_key
from tests.oci_client import assert_error, sha256
from tests.support import server_client

URL = "/v1/container_registries"
CONFIG = b'{"architecture":"amd64","os":"linux"}'


def collect(services, *, untagged: bool = False):
    collector = GarbageCollector(
        services.db, services.registry.stores, timedelta(0), timedelta(days=1)
    )
    return collector.run(delete_untagged=untagged)


def stored(services, key: str) -> bool:
    (store,) = services.registry.stores.values()
    return anyio.run(store.stat, key) is not None


def listing(client, auth, registry_id: str) -> dict:
    response = client.get(f"{URL}/{registry_id}/repositories", headers=auth)
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


def events(client, auth) -> list[dict]:
    events: list[dict] = client.get("/v1/audit_events", headers=auth).json()["audit_events"]
    return events


@pytest.fixture
def images(oci, robot):
    """`<p>/team/app` with v1 and v2, `<p>/other` sharing a layer and the config."""
    p = robot.project_id
    shared, own1, own2 = os.urandom(300), os.urandom(200), os.urandom(100)
    app, other = f"{p}/team/app", f"{p}/other"
    m1, d1 = oci.push_image(app, "v1", layers=[shared, own1])
    m2, d2 = oci.push_image(app, "v2", layers=[shared, own2])
    oci.push_image(other, "latest", layers=[shared])
    return {
        "app": app,
        "other": other,
        "shared": shared,
        "own1": own1,
        "own2": own2,
        "m1": m1,
        "d1": d1,
        "m2": m2,
        "d2": d2,
    }


def test_deleting_a_tag_leaves_the_manifest_until_untagged_ones_are_collected(
    client, services, auth, robot, oci, images
):
    app = images["app"]
    path = f"{URL}/{robot.registry_id}/repositories/{app}/tags"
    listed = {t["name"]: t for t in client.get(path, headers=auth).json()["tags"]}

    deleted = client.delete(f"{path}/v1", headers=auth)

    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"tag": listed["v1"]}
    after = client.get(path, headers=auth).json()
    assert [t["name"] for t in after["tags"]] == ["v2"]
    assert after["repository"]["tag_count"] == 1
    assert_error(oci.get_manifest(app, "v1"), 404, "MANIFEST_UNKNOWN")
    assert oci.get_manifest(app, images["d1"]).content == images["m1"]  # by digest, still
    assert oci.tags(app).json()["tags"] == ["v2"]
    event = events(client, auth)[0]
    assert (event["action"], event["subject"], event["registry_id"]) == (
        "tag.deleted",
        f"{app}:v1",
        robot.registry_id,
    )
    assert event["actor_type"] == "api_token"
    again = client.delete(f"{path}/v1", headers=auth)
    assert again.status_code == 404
    assert events(client, auth)[0]["id"] == event["id"]  # a refusal records nothing

    report = collect(services, untagged=True)

    assert (report.manifests, report.blobs, report.bytes) == (1, 1, 200)  # v1's own layer
    assert_error(oci.get_manifest(app, images["d1"]), 404, "MANIFEST_UNKNOWN")
    assert not stored(services, blob_key(sha256(images["own1"])))
    assert oci.get_manifest(app, "v2").content == images["m2"]
    assert oci.get_blob(app, sha256(images["shared"])).content == images["shared"]


def test_deleting_a_repository_frees_what_only_it_held(client, services, auth, robot, oci, images):
    app, other = images["app"], images["other"]
    before = listing(client, auth, robot.registry_id)
    started = oci.start_upload(app)
    assert oci.patch(started.headers["location"], b"half a layer").status_code == 202
    upload_id = started.headers["docker-upload-uuid"]
    assert stored(services, upload_key(upload_id))

    deleted = client.delete(f"{URL}/{robot.registry_id}/repositories/{app}", headers=auth)

    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"repository": before["repositories"][1]}
    after = listing(client, auth, robot.registry_id)
    assert [r["name"] for r in after["repositories"]] == [other]
    assert after["storage_used_bytes"] == before["repositories"][0]["size_bytes"]
    assert not stored(services, upload_key(upload_id))  # the open upload's data went too
    assert oci.upload_status(started.headers["location"]).status_code == 404
    for reference in ("v1", images["d2"]):
        assert_error(oci.get_manifest(app, reference), 404, "MANIFEST_UNKNOWN")
    assert_error(oci.tags(app), 404, "NAME_UNKNOWN")
    assert_error(oci.get_blob(app, sha256(images["own1"])), 404, "BLOB_UNKNOWN")
    assert oci.catalog().json()["repositories"] == [other]
    missing = client.get(f"{URL}/{robot.registry_id}/repositories/{app}/tags", headers=auth)
    assert missing.status_code == 404
    event = events(client, auth)[0]
    assert (event["action"], event["subject"], event["registry_id"]) == (
        "repository.deleted",
        app,
        robot.registry_id,
    )

    report = collect(services)

    # Both images' own layers go; the config and the layer `other` links stay.
    assert (report.blobs, report.bytes) == (2, 300)
    for gone in ("own1", "own2"):
        assert not stored(services, blob_key(sha256(images[gone])))
    assert stored(services, blob_key(sha256(images["shared"])))
    assert oci.get_blob(other, sha256(images["shared"])).content == images["shared"]
    assert oci.get_manifest(other, "latest").status_code == 200


def test_a_deleted_repository_can_be_pushed_again_from_nothing(
    client, services, auth, robot, oci, images
):
    app = images["app"]
    assert client.delete(f"{URL}/{robot.registry_id}/repositories/{app}", headers=auth).is_success
    collect(services)

    content, digest = oci.push_image(app, "v3", layers=[images["own1"]])

    body = client.get(f"{URL}/{robot.registry_id}/repositories/{app}/tags", headers=auth).json()
    assert [(t["name"], t["digest"]) for t in body["tags"]] == [("v3", digest)]
    assert body["repository"]["size_bytes"] == len(content) + len(CONFIG) + 200
    assert_error(oci.get_manifest(app, "v1"), 404, "MANIFEST_UNKNOWN")


def test_a_user_key_browses_with_read_and_deletes_only_with_write(
    client, services, auth, robot, project, images
):
    user = create_user(services.db, "dev@example.com", default_project=str(project.id))
    _, reader = create_key(services.db, str(user.id), scopes=["read"])
    writer_info, writer = create_key(services.db, str(user.id), scopes=["read", "write"])
    base = f"{URL}/{robot.registry_id}/repositories"
    as_reader = {"Authorization": f"Bearer {reader}", "X-Nodion-Project": str(project.id)}
    as_writer = {"Authorization": f"Bearer {writer}"}  # the user's default project
    before = listing(client, auth, robot.registry_id)

    assert client.get(base, headers=as_reader).json() == before
    tags = client.get(f"{base}/{images['app']}/tags", headers=as_reader)
    assert [t["name"] for t in tags.json()["tags"]] == ["v1", "v2"]
    for path in (f"{base}/{images['app']}/tags/v1", f"{base}/{images['app']}"):
        refused = client.delete(path, headers=as_reader)
        assert refused.status_code == 403, refused.text
        assert "write scope" in refused.json()["errors"][0]
    assert listing(client, auth, robot.registry_id) == before

    deleted = client.delete(f"{base}/{images['app']}/tags/v1", headers=as_writer)
    assert deleted.status_code == 200, deleted.text
    event = events(client, auth)[0]
    assert (event["action"], event["subject"]) == ("tag.deleted", f"{images['app']}:v1")
    assert event["actor"] == str(writer_info.id)


# -- with curl, against `dockyard serve` ----------------------------------------------------


def curl(*args: str) -> tuple[int, dict]:
    done = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body)


def test_curl_and_the_cli_browse_and_delete_names_with_slashes(server, database_url):
    oci, project_id = server_client(server, database_url)
    name = f"{project_id}/team/app"
    _, digest = oci.push_image(name, "v1")
    oci.push_image(name, "v2")
    token = (server.data_dir / "first-project-token").read_text().strip()
    auth = f"Authorization: Bearer {token}"
    status, registries = curl("-H", auth, f"{server.url}{URL}")
    registry_id = registries["container_registries"][0]["id"]
    base = f"{server.url}{URL}/{registry_id}/repositories"

    status, listed = curl("-H", auth, f"{base}?page=1&per_page=10")
    assert status == 200
    assert [r["name"] for r in listed["repositories"]] == [name]
    for spelled in (name, quote(name, safe=""), quote(quote(name, safe=""), safe="")):
        status, tags = curl("-H", auth, f"{base}/{spelled}/tags")
        assert status == 200, (spelled, tags)
        assert [t["name"] for t in tags["tags"]] == ["v1", "v2"]
        assert tags["tags"][0]["digest"] == digest

    status, deleted = curl("-H", auth, "-X", "DELETE", f"{base}/{name}/tags/v1")
    assert (status, deleted["tag"]["name"]) == (200, "v1")

    cli_env = {"DOCKYARD_URL": server.url, "DOCKYARD_TOKEN": token}
    cli = [registry_id, "--json"]
    listed = json.loads(server.cli("registries", "repositories", *cli, extra_env=cli_env))
    assert listed["repositories"][0]["tag_count"] == 1
    assert listed["storage_used_bytes"] == listed["repositories"][0]["size_bytes"]
    tags = json.loads(
        server.cli("registries", "tags", registry_id, name, "--json", extra_env=cli_env)
    )
    assert [t["name"] for t in tags["tags"]] == ["v2"]
    table = server.cli("registries", "tags", registry_id, name, extra_env=cli_env)
    assert tags["tags"][0]["digest"][:20] in table and "page 1 of 1 (1 in all)" in table
    said = server.cli("registries", "delete-tag", registry_id, name, "v2", extra_env=cli_env)
    assert f"Deleted tag v2 ({tags['tags'][0]['digest']}) of {name}" in said
    other = f"{project_id}/other"
    oci.push_image(other, "latest")
    status, deleted = curl("-H", auth, "-X", "DELETE", f"{base}/{other}")
    assert (status, deleted["repository"]["name"]) == (200, other)
    said = server.cli("registries", "delete-repository", registry_id, name, extra_env=cli_env)
    assert f"Deleted repository {name}" in said
    status, missing = curl("-H", auth, f"{base}/{name}/tags")
    assert status == 404
    assert missing == {"errors": [f"Repository {name} not found in this registry"]}
