"""Garbage collection: what goes, what stays, one at a time, and racing with pushes."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from datetime import timedelta

import anyio
import httpx
import pytest

from dockyard.domain.gc import GarbageCollector, GcBusyError
from dockyard.storage.paths import blob_key
from tests.oci_client import OCI_INDEX, OCIClient, descriptor, encode, image_manifest, sha256

NOW = timedelta(0)


@pytest.fixture
def repo(robot) -> str:
    return f"{robot.project_id}/app"


def collector(services, grace: timedelta = NOW, upload_ttl: timedelta = timedelta(days=1)):
    return GarbageCollector(services.db, services.registry.stores, grace, upload_ttl)


def stored(services, digest: str) -> bool:
    (store,) = services.registry.stores.values()
    return anyio.run(store.stat, blob_key(digest)) is not None


def test_an_unreferenced_blob_waits_out_the_grace_period(services, oci, repo):
    data = os.urandom(1000)
    assert oci.push_blob(repo, data).status_code == 201

    report = collector(services, grace=timedelta(hours=1)).run()
    assert (report.links, report.blobs) == (0, 0)
    assert oci.get_blob(repo, sha256(data)).content == data

    report = collector(services).run()
    assert (report.links, report.blobs, report.bytes) == (1, 1, 1000)
    assert oci.head_blob(repo, sha256(data)).status_code == 404
    assert not stored(services, sha256(data))


def test_what_a_tagged_image_references_stays(services, oci, repo):
    layers = [os.urandom(500), os.urandom(700)]
    content, _ = oci.push_image(repo, "v1", layers)
    report = collector(services).run(delete_untagged=True)
    assert (report.manifests, report.links, report.blobs) == (0, 0, 0)
    assert oci.get_manifest(repo, "v1").content == content
    for layer in layers:
        assert oci.get_blob(repo, sha256(layer)).content == layer


def test_deleting_a_manifest_makes_only_its_own_blobs_collectable(services, oci, repo):
    shared, own = os.urandom(300), os.urandom(400)
    oci.push_image(repo, "keep", [shared])
    _, digest = oci.push_image(repo, "drop", [shared, own])
    assert oci.delete_manifest(repo, digest).status_code == 202

    report = collector(services).run()
    assert (report.links, report.blobs) == (1, 1)
    assert oci.head_blob(repo, sha256(own)).status_code == 404
    assert oci.get_blob(repo, sha256(shared)).content == shared


def test_a_deleted_tag_frees_blobs_only_when_untagged_manifests_go_too(services, oci, repo):
    layer = os.urandom(600)
    _, digest = oci.push_image(repo, "v1", [layer])
    assert oci.delete_manifest(repo, "v1").status_code == 202

    kept = collector(services).run()
    assert (kept.manifests, kept.blobs) == (0, 0)
    assert oci.get_manifest(repo, digest).status_code == 200

    freed = collector(services).run(delete_untagged=True)
    assert freed.manifests == 1
    assert freed.blobs == 2  # the layer and the config
    assert oci.get_manifest(repo, digest).status_code == 404
    assert oci.head_blob(repo, sha256(layer)).status_code == 404


def test_the_children_of_an_index_live_as_long_as_the_index(services, oci, repo):
    children = []
    for arch in ("amd64", "arm64"):
        config = f'{{"architecture":"{arch}","os":"linux"}}'.encode()
        content, _ = oci.push_image(
            repo, digest_tag := f"tmp-{arch}", [os.urandom(200)], config=config
        )
        assert oci.delete_manifest(repo, digest_tag).status_code == 202  # children untagged
        children.append(descriptor("application/vnd.oci.image.manifest.v1+json", content))
    index = encode({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
    assert oci.push_manifest(repo, "multi", index, OCI_INDEX).status_code == 201

    report = collector(services).run(delete_untagged=True)
    assert (report.manifests, report.blobs) == (0, 0)
    for child in children:
        fetched = oci.get_manifest(repo, child["digest"])
        assert fetched.status_code == 200
        layer = image_manifest_layers(fetched.json())
        assert all(oci.head_blob(repo, d).status_code == 200 for d in layer)


def image_manifest_layers(document) -> list[str]:
    return [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]


def test_a_dry_run_deletes_nothing(services, oci, repo):
    data = os.urandom(100)
    oci.push_blob(repo, data)
    report = collector(services).run(dry_run=True)
    assert (report.dry_run, report.links, report.blobs) == (True, 1, 0)  # the link stays
    assert oci.get_blob(repo, sha256(data)).content == data


def test_only_one_collection_runs_at_a_time(services):
    first = collector(services)
    first.acquire()
    with pytest.raises(GcBusyError):
        collector(services).run()
    first.release()
    assert collector(services).run().blobs == 0


def test_abandoned_uploads_are_removed(services, oci, repo):
    started = oci.start_upload(repo)
    location = started.headers["Location"]
    assert oci.patch(location, b"half a layer").status_code == 202

    report = collector(services, upload_ttl=NOW).run()
    assert report.uploads == 1
    assert oci.upload_status(location).json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"


def test_pushes_racing_with_collections_leave_every_tagged_image_whole(services, oci, repo):
    """quay/quay#6318: a blob uploaded (201) and collected before its manifest's PUT."""
    rounds = 12
    failures: list[str] = []
    stop = threading.Event()

    def collect() -> None:
        # A grace period shorter than a round, so that left-over blobs of earlier rounds
        # really are collected while later rounds push.
        gc = collector(services, grace=timedelta(seconds=0.3))
        while not stop.is_set():
            with contextlib.suppress(GcBusyError):
                gc.run(delete_untagged=True)

    pushed: dict[str, list[bytes]] = {}

    def push() -> None:
        for index in range(rounds):
            layers = [os.urandom(2000), os.urandom(3000)]
            for _attempt in range(5):
                for blob in [b'{"os":"linux"}', *layers]:
                    oci.push_blob(repo, blob)
                document = image_manifest(b'{"os":"linux"}', layers)
                answer = oci.push_manifest(repo, f"t{index}", document)
                if answer.status_code == 201:
                    pushed[f"t{index}"] = layers
                    break
                # Collected between upload and manifest (a slow round): upload again.
                assert answer.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
            else:
                failures.append(f"t{index} never got in")

    gc_thread = threading.Thread(target=collect)
    gc_thread.start()
    try:
        push()
    finally:
        stop.set()
        gc_thread.join(timeout=60)
    assert not failures
    collector(services).run(delete_untagged=True)
    for tag, layers in pushed.items():
        manifest = oci.get_manifest(repo, tag)
        assert manifest.status_code == 200
        for layer in layers:
            fetched = oci.get_blob(repo, sha256(layer))
            assert fetched.status_code == 200, tag
            assert fetched.content == layer


def test_serve_collects_periodically_when_asked(make_client, auth, robot):
    client = make_client(gc_interval_seconds=0.2, gc_grace_seconds=0)
    with client:  # runs the lifespan, where the periodic collection lives
        oci = OCIClient(client, robot.username, robot.password)
        repo = f"{robot.project_id}/app"
        data = os.urandom(64)
        assert oci.push_blob(repo, data).status_code == 201
        # A round every 0.2 s; the bound is for a loaded machine (10 s was short once).
        for _ in range(300):
            if oci.head_blob(repo, sha256(data)).status_code == 404:
                break
            threading.Event().wait(0.1)
        assert oci.head_blob(repo, sha256(data)).status_code == 404


def test_the_gc_command_reports_and_frees(server):
    token = (server.data_dir / "first-project-token").read_text().strip()
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    managed = api.get("/v1/container_registries").json()["container_registries"][0]
    robot = api.post(f"/v1/container_registries/{managed['id']}/credentials").json()
    robot = robot["container_registry"]
    oci = OCIClient(httpx.Client(), robot["username"], robot["password"], host=server.url[7:])
    project = json.loads(server.cli("projects", "list", "--json"))[0]["id"]
    repo = f"{project}/app"
    data = os.urandom(2048)
    assert oci.push_blob(repo, data).status_code == 201

    dry = server.cli("gc", "--dry-run", extra_env={"DOCKYARD_GC_GRACE_SECONDS": "0"})
    assert "Would free" in dry
    assert oci.head_blob(repo, sha256(data)).status_code == 200
    freed = server.cli("gc", extra_env={"DOCKYARD_GC_GRACE_SECONDS": "0"})
    assert "Freed" in freed and "2,048" in freed
    assert oci.head_blob(repo, sha256(data)).status_code == 404
