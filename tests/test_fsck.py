"""`dockyard fsck`: each kind of damage, built by hand, is reported exactly and repaired."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, insert, update
from typer.testing import CliRunner

from dockyard.app import Services, build_services, create_app
from dockyard.cli import app as cli_app
from dockyard.config import Settings, StorageSettings
from dockyard.db.models import Blob, ManifestReference, RepositoryBlob, Tag, Upload
from dockyard.domain.fsck import Fsck, FsckReport
from dockyard.domain.gc import GarbageCollector, GcBusyError
from dockyard.storage.base import BlobStore
from dockyard.storage.paths import blob_key, upload_key
from dockyard.storage.s3 import S3BlobStore
from tests.oci_client import OCIClient, sha256
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server

HOUR = timedelta(hours=1)


@pytest.fixture
def repo(robot: Any) -> str:
    return f"{robot.project_id}/app"


def fsck(
    services: Services, *, repair: bool = False, grace: timedelta = timedelta(0)
) -> FsckReport:
    regions = {r.region_id: r.slug for r in services.settings.effective_regions}
    checker = Fsck(services.db, services.registry.stores, regions, grace)
    return checker.run(repair=repair)


def found(report: FsckReport) -> list[tuple[str, str]]:
    return sorted((p.kind, p.subject) for p in report.problems)


def the_store(services: Services) -> BlobStore:
    (store,) = services.registry.stores.values()
    return store


def write(store: BlobStore, key: str, data: bytes) -> None:
    async def chunks() -> Any:
        yield data

    async def main() -> None:
        await store.append(key, 0, chunks())
        await store.seal(key)

    anyio.run(main)


def exists(store: BlobStore, key: str) -> bool:
    return anyio.run(store.stat, key) is not None


def overwrite(store: BlobStore, key: str, data: bytes) -> None:
    """Damage an object in place, as a disk or a careless operator would."""
    if isinstance(store, S3BlobStore):
        store.client.put_object(Bucket=store.bucket, Key=store.prefix + key, Body=data)
    else:
        path = store.local_path(key)
        assert path is not None
        path.write_bytes(data)


def execute(services: Services, statement: Any) -> None:
    with services.db.write() as session:
        session.execute(statement)


def test_a_healthy_registry_is_clean(services, oci, repo):
    oci.push_image(repo, "v1", [os.urandom(3000), os.urandom(5000)])
    report = fsck(services)
    assert report.problems == []
    assert report.blobs == 3  # the config and two layers
    assert report.bytes > 8000


def test_a_corrupt_blob_is_deleted_with_its_links_and_pushed_again(services, oci, repo):
    layer = os.urandom(4000)
    oci.push_image(repo, "v1", [layer])
    overwrite(the_store(services), blob_key(sha256(layer)), b"bit rot" + layer[7:])

    assert found(fsck(services)) == [("corrupt_blob", sha256(layer))]
    repaired = fsck(services, repair=True)
    subject = f"{repo}@{oci.head_manifest(repo, 'v1').headers['docker-content-digest']}"
    # The manifest now names a layer the repository lacks: said, and left for a new push.
    assert found(repaired) == [("corrupt_blob", sha256(layer)), ("missing_reference", subject)]
    assert "push it again" in repaired.problems[0].repair
    assert oci.head_blob(repo, sha256(layer)).status_code == 404
    assert oci.get_manifest(repo, "v1").status_code == 200  # never deletes what users see

    assert oci.push_blob(repo, layer).status_code == 201
    assert fsck(services).problems == []
    assert oci.get_blob(repo, sha256(layer)).content == layer


def test_a_missing_object_and_a_wrong_size(services, oci, repo):
    lost, resized = os.urandom(100), os.urandom(200)
    for blob in (lost, resized):
        assert oci.push_blob(repo, blob).status_code == 201
    anyio.run(the_store(services).delete, blob_key(sha256(lost)))
    execute(services, update(Blob).where(Blob.digest == sha256(resized)).values(size=7))

    report = fsck(services)
    assert found(report) == sorted(
        [("missing_object", sha256(lost)), ("wrong_size", sha256(resized))]
    )
    fsck(services, repair=True)
    assert fsck(services).problems == []
    assert oci.head_blob(repo, sha256(lost)).status_code == 404
    assert oci.head_blob(repo, sha256(resized)).headers["content-length"] == "200"


def test_a_fresh_row_without_its_object_is_a_push_in_flight(services, oci, repo):
    digest = sha256(b"being stored")
    services.registry.repositories.reserve_blob(the_store_region(services), digest, 12)
    assert fsck(services, grace=HOUR).problems == []
    assert found(fsck(services)) == [("missing_object", digest)]


def the_store_region(services: Services) -> uuid.UUID:
    (region,) = services.registry.stores
    return region


def test_orphans_and_stale_uploads_older_than_the_grace_period_go(services, oci, repo):
    store = the_store(services)
    orphan = blob_key(sha256(b"nobody knows me"))
    write(store, orphan, b"nobody knows me")
    write(store, "blobs/junk", b"not even a blob key")
    started = oci.start_upload(repo)
    location = started.headers["location"]
    assert oci.patch(location, b"half a layer").status_code == 202
    stale = uuid.UUID(started.headers["docker-upload-uuid"])
    live = oci.start_upload(repo).headers["location"]
    assert oci.patch(live, b"still pushing").status_code == 202
    execute(services, delete(Upload).where(Upload.id == stale))

    assert fsck(services, grace=HOUR).problems == []  # could be in flight
    report = fsck(services, repair=True)
    assert found(report) == [
        ("orphan_object", "blobs/junk"),
        ("orphan_object", orphan),
        ("stale_upload", f"uploads/{stale}"),
    ]
    assert all(p.repair == "deleted" for p in report.problems)
    assert not exists(store, orphan) and not exists(store, upload_key(stale))
    assert fsck(services).problems == []
    digest = sha256(b"still pushing")
    assert oci.put_upload(live, digest).status_code == 201  # the live upload was left alone


def test_a_blob_row_deleted_under_its_link(services, oci, repo):
    data = os.urandom(300)
    assert oci.push_blob(repo, data).status_code == 201
    execute(services, delete(Blob).where(Blob.digest == sha256(data)))

    report = fsck(services, repair=True)
    assert found(report) == [
        ("dangling_link", f"{repo}@{sha256(data)}"),
        ("orphan_object", blob_key(sha256(data))),
    ]
    assert fsck(services).problems == []
    assert oci.push_blob(repo, data).status_code == 201
    assert oci.get_blob(repo, sha256(data)).content == data


def test_tags_and_references_that_point_at_nothing(services, oci, repo):
    layer = os.urandom(500)
    _, digest = oci.push_image(repo, "v1", [layer])
    repo_id = uuid.UUID(str(services_repo_id(services, repo)))
    nowhere = sha256(b"no such manifest")
    execute(
        services, insert(Tag).values(repository_id=repo_id, name="ghost", manifest_digest=nowhere)
    )
    execute(
        services,
        insert(ManifestReference).values(
            repository_id=repo_id, manifest_digest=nowhere, digest=sha256(layer), kind="blob"
        ),
    )
    # The layer's reference row lost: the collector would no longer see the layer in use.
    execute(
        services,
        delete(ManifestReference).where(
            ManifestReference.digest == sha256(layer), ManifestReference.manifest_digest == digest
        ),
    )

    report = fsck(services, repair=True)
    assert found(report) == [
        ("dangling_tag", f"{repo}:ghost"),
        ("stray_reference", f"{repo}@{nowhere}"),
        ("unrecorded_reference", f"{repo}@{digest}"),
    ]
    assert "pointed at nothing" in next(
        p.repair for p in report.problems if p.kind == "dangling_tag"
    )
    assert fsck(services).problems == []
    assert oci.get_manifest(repo, "ghost").status_code == 404
    assert oci.get_manifest(repo, "v1").status_code == 200
    GarbageCollector(services.db, services.registry.stores, timedelta(0), HOUR).run()
    assert oci.get_blob(repo, sha256(layer)).content == layer  # recorded again, so kept


def test_a_layer_unlinked_under_a_manifest_is_reported_not_hidden(services, oci, repo):
    layer = os.urandom(500)
    _, digest = oci.push_image(repo, "v1", [layer])
    execute(services, delete(RepositoryBlob).where(RepositoryBlob.digest == sha256(layer)))
    report = fsck(services, repair=True)
    assert found(report) == [("missing_reference", f"{repo}@{digest}")]
    assert report.problems[0].repair == "nothing: push the image again"
    assert oci.get_manifest(repo, "v1").status_code == 200


def services_repo_id(services: Services, name: str) -> uuid.UUID:
    return services.registry.repositories.get(the_store_region(services), name).id


def test_a_repair_waits_for_a_running_collection(services):
    collector = GarbageCollector(services.db, services.registry.stores, HOUR, HOUR)
    collector.acquire()
    try:
        with pytest.raises(GcBusyError):
            fsck(services, repair=True)
        assert fsck(services).problems == []  # a check alone does not need the lock
    finally:
        collector.release()


def test_the_command_exits_1_on_problems_and_speaks_json(settings, services, oci, repo):
    runner = CliRunner()
    env = {
        "DOCKYARD_DATA_DIR": str(settings.data_dir),
        "DOCKYARD_DATABASE_URL": settings.resolved_database_url,
        "DOCKYARD_GC_GRACE_SECONDS": "0",
        "COLUMNS": "200",
    }
    oci.push_image(repo, "v1", [os.urandom(1000)])
    clean = runner.invoke(cli_app, ["fsck"], env=env)
    assert clean.exit_code == 0, clean.output
    assert "Checked 2 blobs" in clean.stdout and "no problems" in clean.stdout

    write(the_store(services), blob_key(sha256(b"orphan")), b"orphan")
    dirty = runner.invoke(cli_app, ["fsck", "--json"], env=env)
    assert dirty.exit_code == 1, dirty.output
    body = json.loads(dirty.stdout)
    assert [p["kind"] for p in body["problems"]] == ["orphan_object"]
    assert body["blobs"] == 2 and body["repair"] is False

    repaired = runner.invoke(cli_app, ["fsck", "--repair"], env=env)
    assert repaired.exit_code == 1 and "orphan_object" in repaired.stdout
    assert "deleted" in repaired.stdout
    assert runner.invoke(cli_app, ["fsck"], env=env).exit_code == 0


# -- on S3 ----------------------------------------------------------------------------------


@pytest.fixture
def s3_services(make_settings: Callable[..., Settings], s3_server: S3Server) -> Iterator[Services]:
    storage = StorageSettings(
        type="s3",
        bucket="dockyard-test",
        prefix=f"fsck-{uuid.uuid4().hex}",
        endpoint_url=s3_server.endpoint,
        region="us-east-1",
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        path_style=True,
        max_attempts=2,
    )
    built = build_services(make_settings(storage=storage))
    yield built
    built.close()


def test_on_s3_corrupt_blobs_orphans_and_stale_uploads(s3_services, robot_on):
    services = s3_services
    oci, repo = robot_on(services)
    store = the_store(services)
    kept, rotten = os.urandom(2000), os.urandom(3000)
    for blob in (kept, rotten):
        assert oci.push_blob(repo, blob).status_code == 201
    overwrite(store, blob_key(sha256(rotten)), rotten[:-1])
    write(store, blob_key(sha256(b"orphan")), b"orphan")
    started = oci.start_upload(repo)
    assert oci.patch(started.headers["location"], b"never sealed").status_code == 202
    stale = uuid.UUID(started.headers["docker-upload-uuid"])
    execute(services, delete(Upload).where(Upload.id == stale))

    report = fsck(services, repair=True)
    assert found(report) == [
        ("corrupt_blob", sha256(rotten)),
        ("orphan_object", blob_key(sha256(b"orphan"))),
        ("stale_upload", f"uploads/{stale}"),
    ]
    assert fsck(services).problems == []
    assert isinstance(store, S3BlobStore)
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    assert uploads.get("Uploads", []) == []  # the unsealed upload's parts went too
    assert oci.get_blob(repo, sha256(kept)).content == kept


@pytest.fixture
def robot_on(project: Any, tmp_path: Any) -> Iterator[Callable[[Services], tuple[OCIClient, str]]]:
    clients: list[TestClient] = []

    def make(services: Services) -> tuple[OCIClient, str]:
        client = TestClient(create_app(services.settings, services))
        clients.append(client)
        auth = {"Authorization": f"Bearer {project.api_token}"}
        managed = client.get("/v1/container_registries", headers=auth).json()
        registry_id = managed["container_registries"][0]["id"]
        created = client.post(f"/v1/container_registries/{registry_id}/credentials", headers=auth)
        body = created.json()["container_registry"]
        return OCIClient(client, body["username"], body["password"]), f"{project.id}/app"

    yield make
    for client in clients:
        client.close()
