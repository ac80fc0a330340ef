"""/v2/<name>/manifests: push, pull and delete every kind of manifest, and every refusal."""

from __future__ import annotations

import json

import pytest

from tests.oci_client import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    OCIClient,
    assert_error,
    assert_unauthorized,
    descriptor,
    encode,
    image_manifest,
    sha256,
    sha512,
)

CONFIG = b'{"architecture":"amd64","os":"linux"}'
LAYER = b"layer bytes"


@pytest.fixture
def name(robot) -> str:
    return f"{robot.project_id}/app"


@pytest.fixture
def blobs(oci, name) -> None:
    """The config and layer every manifest here refers to, pushed to `name`."""
    for blob in (CONFIG, LAYER):
        assert oci.push_blob(name, blob).status_code == 201


def assert_pulls(oci: OCIClient, name: str, reference: str, content: bytes, media_type: str):
    digest = sha256(content)
    got = oci.get_manifest(name, reference)
    assert got.status_code == 200, got.text
    assert got.content == content
    assert got.headers["content-type"] == media_type
    assert got.headers["docker-content-digest"] == digest
    assert got.headers["content-length"] == str(len(content))
    assert got.headers["etag"] == f'"{digest}"'
    head = oci.head_manifest(name, reference)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == media_type
    assert head.headers["docker-content-digest"] == digest
    assert head.headers["content-length"] == str(len(content))


def assert_created(response, name: str, content: bytes) -> None:
    assert response.status_code == 201, response.text
    assert response.headers["docker-content-digest"] == sha256(content)
    assert response.headers["location"] == f"/v2/{name}/manifests/{sha256(content)}"
    assert "oci-subject" not in response.headers


def assert_missing(oci: OCIClient, name: str, reference: str) -> None:
    assert_error(oci.get_manifest(name, reference), 404, "MANIFEST_UNKNOWN")
    assert oci.head_manifest(name, reference).status_code == 404


# -- kinds of manifest ---------------------------------------------------------------------


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_image_manifest_by_tag_and_by_digest(oci, name, blobs, media_type):
    content = encode(image_manifest(CONFIG, [LAYER], media_type=media_type))
    assert_created(oci.push_manifest(name, "v1", content, media_type), name, content)
    assert_pulls(oci, name, "v1", content, media_type)
    assert_pulls(oci, name, sha256(content), content, media_type)
    assert oci.tags(name).json() == {"name": name, "tags": ["v1"]}


@pytest.mark.parametrize(
    ("index_type", "child_type"), [(OCI_INDEX, OCI_MANIFEST), (DOCKER_LIST, DOCKER_MANIFEST)]
)
def test_index_of_manifests_pushed_by_digest(oci, name, index_type, child_type):
    children = []
    for arch in ("amd64", "arm64"):
        config = json.dumps({"architecture": arch, "os": "linux"}).encode()
        layer = f"{arch} layer".encode()
        for blob in (config, layer):
            oci.push_blob(name, blob)
        content = encode(image_manifest(config, [layer], media_type=child_type))
        assert_created(oci.push_manifest(name, sha256(content), content, child_type), name, content)
        children.append(
            descriptor(child_type, content, platform={"architecture": arch, "os": "linux"})
        )
    index = encode({"schemaVersion": 2, "mediaType": index_type, "manifests": children})
    assert_created(oci.push_manifest(name, "multi", index, index_type), name, index)
    assert_pulls(oci, name, "multi", index, index_type)
    assert oci.tags(name).json()["tags"] == ["multi"]  # the children carry no tag
    for child in children:
        assert oci.get_manifest(name, child["digest"]).status_code == 200


def test_an_artifact_with_its_own_types(oci, name):
    empty, payload = b"{}", b'{"sbom": true}'
    oci.push_blob(name, empty)
    oci.push_blob(name, payload)
    artifact = encode(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom.v1",
            "config": descriptor(OCI_EMPTY, empty),
            "layers": [descriptor("application/vnd.example.sbom.layer.v1+json", payload)],
        }
    )
    assert_created(oci.push_manifest(name, "sbom", artifact, OCI_MANIFEST), name, artifact)
    assert_pulls(oci, name, "sbom", artifact, OCI_MANIFEST)


def test_a_manifest_of_a_custom_media_type(oci, name, blobs):
    custom = "application/vnd.example.thing.manifest.v1+json"
    document = image_manifest(CONFIG, [LAYER], config_type="application/vnd.example.config")
    del document["mediaType"]  # then the Content-Type says what it is
    content = encode(document)
    assert_created(oci.push_manifest(name, "thing", content, custom), name, content)
    assert_pulls(oci, name, "thing", content, custom)


def test_the_digest_is_over_the_exact_bytes(oci, name, blobs):
    document = image_manifest(CONFIG, [LAYER], annotations={"note": "caf\u00e9"})
    content = (json.dumps(document, indent=7, ensure_ascii=True) + "\n\n").encode()
    assert content != encode(document)
    pushed = oci.push_manifest(name, "spaced", content, OCI_MANIFEST)
    assert_created(pushed, name, content)
    assert_pulls(oci, name, "spaced", content, OCI_MANIFEST)


def test_content_type_parameters_are_ignored(oci, name, blobs):
    content = encode(image_manifest(CONFIG, [LAYER]))
    pushed = oci.push_manifest(name, "v1", content, f"{OCI_MANIFEST}; charset=utf-8")
    assert_created(pushed, name, content)
    assert_pulls(oci, name, "v1", content, OCI_MANIFEST)


def test_a_tag_moves_to_the_last_manifest_pushed(oci, name, blobs):
    first = encode(image_manifest(CONFIG, [LAYER]))
    second = encode(image_manifest(CONFIG, [LAYER], annotations={"v": "2"}))
    oci.push_manifest(name, "latest", first)
    oci.push_manifest(name, "stable", first)
    oci.push_manifest(name, "latest", second)
    assert oci.get_manifest(name, "latest").content == second
    assert oci.get_manifest(name, "stable").content == first
    assert oci.get_manifest(name, sha256(first)).content == first


# -- refusals ------------------------------------------------------------------------------


def test_a_missing_layer_or_config_is_manifest_blob_unknown(oci, name, blobs):
    for config, layers, missing in [
        (CONFIG, [LAYER, b"never pushed"], sha256(b"never pushed")),
        (b"no such config", [LAYER], sha256(b"no such config")),
    ]:
        refused = oci.push_manifest(name, "broken", image_manifest(config, layers))
        error = assert_error(refused, 400, "MANIFEST_BLOB_UNKNOWN")
        assert error["detail"] == {"digest": missing}
    assert_missing(oci, name, "broken")


def test_a_missing_child_manifest_is_manifest_blob_unknown(oci, name, blobs):
    child = encode(image_manifest(CONFIG, [LAYER]))  # its blobs exist; it was never pushed
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, child)],
    }
    error = assert_error(oci.push_manifest(name, "multi", index), 400, "MANIFEST_BLOB_UNKNOWN")
    assert error["detail"] == {"digest": sha256(child)}
    assert_missing(oci, name, "multi")


def test_blobs_must_be_in_this_repository(oci, name, robot, blobs, client, other_robot):
    sibling = f"{robot.project_id}/sibling"
    refused = oci.push_manifest(sibling, "v1", image_manifest(CONFIG, [LAYER]))
    assert_error(refused, 400, "MANIFEST_BLOB_UNKNOWN")
    neighbour = OCIClient(client, other_robot.username, other_robot.password)
    theirs = f"{other_robot.project_id}/app"
    refused = neighbour.push_manifest(theirs, "v1", image_manifest(CONFIG, [LAYER]))
    assert_error(refused, 400, "MANIFEST_BLOB_UNKNOWN")


def test_another_project_cannot_pull_or_push_here(oci, name, blobs, client, other_robot):
    content = encode(image_manifest(CONFIG, [LAYER]))
    oci.push_manifest(name, "v1", content)
    neighbour = OCIClient(client, other_robot.username, other_robot.password)
    assert_unauthorized(neighbour.get_manifest(name, "v1"), "insufficient_scope")
    assert_unauthorized(neighbour.push_manifest(name, "v2", content), "insufficient_scope")
    assert_unauthorized(neighbour.delete_manifest(name, "v1"), "insufficient_scope")
    assert oci.tags(name).json()["tags"] == ["v1"]


def test_a_subject_that_does_not_exist_yet_is_accepted(oci, name, blobs):
    ghost = encode(image_manifest(CONFIG, [LAYER], annotations={"ghost": "yes"}))
    content = encode(image_manifest(CONFIG, [LAYER], subject=descriptor(OCI_MANIFEST, ghost)))
    pushed = oci.push_manifest(name, sha256(content), content)
    assert pushed.status_code == 201, pushed.text
    assert pushed.headers["oci-subject"] == sha256(ghost)


def test_a_manifest_up_to_the_limit_is_accepted_and_larger_is_413(oci, name, blobs, settings):
    limit = settings.max_manifest_bytes
    assert limit == 4 * 1024 * 1024
    document = image_manifest(CONFIG, [LAYER], annotations={"pad": ""})
    document["annotations"]["pad"] = "x" * (limit - len(encode(document)))
    content = encode(document)
    assert len(content) == limit
    assert_created(oci.push_manifest(name, "big", content, OCI_MANIFEST), name, content)

    document["annotations"]["pad"] += "x"
    too_big = encode(document)
    assert_error(oci.push_manifest(name, "bigger", too_big, OCI_MANIFEST), 413, "MANIFEST_INVALID")
    streamed = oci.request(
        "PUT",
        f"/v2/{name}/manifests/streamed",
        scope=f"repository:{name}:pull,push",
        headers={"Content-Type": OCI_MANIFEST},
        content=iter([too_big[:1000], too_big[1000:]]),
    )
    assert_error(streamed, 413, "MANIFEST_INVALID")
    assert_missing(oci, name, "bigger")
    assert_missing(oci, name, "streamed")


GOOD = image_manifest(CONFIG, [LAYER])
UNTYPED = {k: v for k, v in GOOD.items() if k != "mediaType"}
LONG_TYPE = "application/vnd." + "x" * 250 + "+json"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"", OCI_MANIFEST),
        (b"{not json", OCI_MANIFEST),
        (b"\xff\xfe", OCI_MANIFEST),
        (b"[]", OCI_MANIFEST),
        (b'"a string"', OCI_MANIFEST),
        (b"[" * 100_000 + b"]" * 100_000, OCI_MANIFEST),
        (encode({**GOOD, "schemaVersion": 1}), OCI_MANIFEST),
        (encode({k: v for k, v in GOOD.items() if k != "schemaVersion"}), OCI_MANIFEST),
        (encode({k: v for k, v in GOOD.items() if k != "config"}), OCI_MANIFEST),
        (encode({k: v for k, v in GOOD.items() if k != "layers"}), OCI_MANIFEST),
        (encode({**GOOD, "layers": {}}), OCI_MANIFEST),
        (encode({**GOOD, "layers": ["sha256:abc"]}), OCI_MANIFEST),
        (encode({**GOOD, "config": {**GOOD["config"], "digest": "nope"}}), OCI_MANIFEST),
        (encode({**GOOD, "config": {**GOOD["config"], "size": -1}}), OCI_MANIFEST),
        (encode({**GOOD, "config": {**GOOD["config"], "size": "12"}}), OCI_MANIFEST),
        (encode({**GOOD, "config": {**GOOD["config"], "mediaType": ""}}), OCI_MANIFEST),
        (encode({**GOOD, "annotations": {"a": 1}}), OCI_MANIFEST),
        (encode({**GOOD, "subject": "sha256:abc"}), OCI_MANIFEST),
        (encode({**GOOD, "artifactType": 7}), OCI_MANIFEST),
        (encode(GOOD), DOCKER_MANIFEST),  # mediaType and Content-Type disagree
        (encode({"schemaVersion": 2, "mediaType": OCI_INDEX}), OCI_INDEX),
        (encode({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{}]}), OCI_INDEX),
        (
            encode({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}),
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ),
        # What the database could not hold is refused before it gets there.
        (encode({**GOOD, "mediaType": LONG_TYPE}), LONG_TYPE),
        (encode(UNTYPED), "not-a-media-type"),
        (encode({**GOOD, "artifactType": "application/x\u0000y"}), OCI_MANIFEST),
        (encode({**GOOD, "artifactType": LONG_TYPE}), OCI_MANIFEST),
        (encode({**GOOD, "config": {**GOOD["config"], "mediaType": LONG_TYPE}}), OCI_MANIFEST),
        (encode({**GOOD, "subject": {**GOOD["config"], "digest": "sha256:" + "a" * 200}}), None),
    ],
)
def test_malformed_manifests_are_manifest_invalid(oci, name, blobs, content, content_type):
    refused = oci.push_manifest(name, "bad", content, content_type)
    assert_error(refused, 400, "MANIFEST_INVALID")
    assert_missing(oci, name, "bad")


def test_put_by_digest(oci, name, blobs):
    content = encode(image_manifest(CONFIG, [LAYER]))
    wrong = sha256(content + b" ")
    error = assert_error(oci.push_manifest(name, wrong, content), 400, "DIGEST_INVALID")
    assert error["detail"] == {"expected": wrong, "actual": sha256(content)}
    assert_missing(oci, name, sha256(content))
    assert_created(oci.push_manifest(name, sha256(content), content), name, content)
    assert oci.tags(name).json()["tags"] == []


def test_put_by_a_sha512_digest(oci, name, blobs):
    content = encode(image_manifest(CONFIG, [LAYER]))
    assert_error(oci.push_manifest(name, sha512(content + b" "), content), 400, "DIGEST_INVALID")
    pushed = oci.push_manifest(name, sha512(content), content)
    assert pushed.status_code == 201, pushed.text
    # The spec: Docker-Content-Digest MUST match the digest the client gave.
    assert pushed.headers["docker-content-digest"] == sha512(content)
    assert pushed.headers["location"] == f"/v2/{name}/manifests/{sha512(content)}"
    got = oci.get_manifest(name, sha512(content))
    assert got.status_code == 200, got.text
    assert got.content == content
    assert got.headers["docker-content-digest"] == sha512(content)
    child = {"mediaType": OCI_MANIFEST, "digest": sha512(content), "size": len(content)}
    index = encode({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child]})
    assert_created(oci.push_manifest(name, "multi", index), name, index)


# -- deleting ------------------------------------------------------------------------------


def test_delete_by_tag_removes_only_the_tag(oci, name, blobs):
    content = encode(image_manifest(CONFIG, [LAYER]))
    for tag in ("v1", "latest"):
        oci.push_manifest(name, tag, content)
    deleted = oci.delete_manifest(name, "v1")
    assert deleted.status_code == 202
    assert_missing(oci, name, "v1")
    assert oci.get_manifest(name, "latest").content == content
    assert oci.get_manifest(name, sha256(content)).content == content
    assert oci.tags(name).json()["tags"] == ["latest"]
    assert_error(oci.delete_manifest(name, "v1"), 404, "MANIFEST_UNKNOWN")


def test_delete_by_digest_removes_the_manifest_and_its_tags(oci, name, blobs):
    content = encode(image_manifest(CONFIG, [LAYER]))
    other = encode(image_manifest(CONFIG, [LAYER], annotations={"other": "1"}))
    for tag in ("v1", "latest"):
        oci.push_manifest(name, tag, content)
    oci.push_manifest(name, "keep", other)
    deleted = oci.delete_manifest(name, sha256(content))
    assert deleted.status_code == 202
    for reference in ("v1", "latest", sha256(content)):
        assert_missing(oci, name, reference)
    assert oci.tags(name).json()["tags"] == ["keep"]
    assert oci.get_manifest(name, "keep").content == other
    assert_error(oci.delete_manifest(name, sha256(content)), 404, "MANIFEST_UNKNOWN")
    # It can be pushed again, and its blobs are still there to refer to.
    assert_created(oci.push_manifest(name, "v1", content), name, content)


def test_unknown_references_and_repositories(oci, name, robot, blobs):
    assert_missing(oci, name, "nope")
    assert_missing(oci, name, sha256(b"nope"))
    assert_error(oci.delete_manifest(name, "nope"), 404, "MANIFEST_UNKNOWN")
    nowhere = f"{robot.project_id}/nowhere"
    assert_missing(oci, nowhere, "latest")
    assert_error(oci.delete_manifest(nowhere, "latest"), 404, "MANIFEST_UNKNOWN")
    assert_error(oci.delete_manifest(nowhere, sha256(b"x")), 404, "MANIFEST_UNKNOWN")
