"""A repository deleted through /v1 while a push into it is under way: a write that refers
to the row that is gone is NAME_UNKNOWN (the client retries, and the retry creates the
repository anew), never a 500.

The deletion lands in the one moment between the handler finding the repository and
writing into it: a race no test can hit on purpose, so the test makes it happen there,
with the same statement a /v1 deletion ends with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import delete

from dockyard.db.models import Repository
from tests.oci_client import assert_error, encode, image_manifest, sha256


@pytest.fixture
def name(robot) -> str:
    return f"{robot.project_id}/app"


def deleting_first(services, name: str, step: Callable[..., Any]) -> Callable[..., Any]:
    def step_after_deletion(*args: Any, **kwargs: Any) -> Any:
        with services.db.write() as session:
            session.execute(delete(Repository).where(Repository.name == name))
        return step(*args, **kwargs)

    return step_after_deletion


def test_a_manifest_put_into_a_repository_deleted_meanwhile_names_the_missing_blob(
    oci, services, name, monkeypatch
):
    config, layer = b'{"architecture":"amd64","os":"linux"}', b"a layer"
    for blob in (config, layer):
        assert oci.push_blob(name, blob).status_code == 201
    document = image_manifest(config, [layer])
    content = encode(document)
    manifests = services.registry.manifests
    monkeypatch.setattr(manifests, "put", deleting_first(services, name, manifests.put))

    refused = oci.push_manifest(name, "v1", content, document["mediaType"])

    # The deletion took the repository's blobs with it: what the client must push again.
    assert_error(refused, 400, "MANIFEST_BLOB_UNKNOWN")
    monkeypatch.undo()
    assert_error(oci.get_manifest(name, "v1"), 404, "MANIFEST_UNKNOWN")
    _, digest = oci.push_image(name, "v1", [layer], config)  # the client's retry
    assert digest == sha256(content)
    assert oci.get_manifest(name, "v1").content == content


def test_a_blob_finished_into_a_repository_deleted_meanwhile_is_name_unknown(
    oci, services, name, monkeypatch
):
    assert oci.push_blob(name, b"first").status_code == 201  # the repository exists
    repositories = services.registry.repositories
    monkeypatch.setattr(
        repositories, "link_blob", deleting_first(services, name, repositories.link_blob)
    )

    refused = oci.push_blob(name, b"second")

    assert_error(refused, 404, "NAME_UNKNOWN")
    monkeypatch.undo()
    assert oci.push_blob(name, b"second").status_code == 201  # the client's retry
    assert oci.get_blob(name, sha256(b"second")).content == b"second"
