"""/v2 names, tags and digests: what the grammar accepts, and the OCI error for the rest."""

from __future__ import annotations

import uuid

import pytest

from tests.oci_client import assert_error, sha256, sha512

ABSENT = "sha256:" + "0" * 64


# -- repository names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["app", "a/b/c", "my-app", "my--app", "my_app", "my__app", "v1.2", "0", "x9/y-z.w_q"],
)
def test_valid_names_are_accepted(oci, robot, path):
    name = f"{robot.project_id}/{path}"
    pushed = oci.push_blob(name, b"hello")
    assert pushed.status_code == 201, pushed.text
    assert pushed.headers["location"] == f"/v2/{name}/blobs/{sha256(b'hello')}"
    assert oci.head_blob(name, sha256(b"hello")).status_code == 200


def test_a_name_of_255_characters_is_the_longest(oci, robot):
    prefix = f"{robot.project_id}/"
    longest = prefix + "a" * (255 - len(prefix))
    assert oci.push_blob(longest, b"x").status_code == 201
    assert_error(oci.push_blob(longest + "a", b"x"), 400, "NAME_INVALID")
    assert_error(oci.tags(longest + "a"), 400, "NAME_INVALID")


@pytest.mark.parametrize(
    "path",
    [
        "a..b",  # two separators in a row
        "a.-b",
        "a___b",  # only one or two underscores
        "a//b",  # an empty path component
        "App",  # upper case
        "app.",
        "-app",
        "app-",
        "_app",
        "a b",
        "ünïcode",
    ],
)
def test_malformed_names_are_name_invalid(oci, robot, path):
    name = f"{robot.project_id}/{path}"
    error = assert_error(oci.tags(name), 400, "NAME_INVALID")
    assert error["detail"] == {"name": name}
    assert_error(oci.push_blob(name, b"x"), 400, "NAME_INVALID")


def test_trailing_slash_is_an_empty_component(oci, robot):
    assert_error(oci.tags(f"{robot.project_id}/app/"), 400, "NAME_INVALID")


@pytest.mark.parametrize(
    "make_name",
    [
        lambda pid: "app",  # no project at all
        lambda pid: "library/app",  # a namespace that is not a project id
        lambda pid: pid,  # the project id alone names no repository
        lambda pid: pid.replace("-", "") + "/app",  # a UUID, but not spelled canonically
        lambda pid: pid.upper() + "/app",
        lambda pid: "x" + pid + "/app",
        lambda pid: f"app/{pid}",  # the project id must come first
    ],
    ids=["bare", "library", "project-only", "undashed-uuid", "upper-uuid", "prefixed", "second"],
)
def test_names_must_start_with_a_project_id(oci, robot, make_name):
    name = make_name(robot.project_id)
    assert_error(oci.tags(name), 400, "NAME_INVALID")
    assert_error(oci.push_blob(name, b"x"), 400, "NAME_INVALID")
    assert_error(oci.get_manifest(name, "latest"), 400, "NAME_INVALID")


def test_every_repository_endpoint_checks_the_name(oci, robot):
    name = f"{robot.project_id}/Bad"
    upload = f"/v2/{name}/blobs/uploads/{uuid.uuid4()}"
    calls = [
        oci.tags(name),
        oci.start_upload(name),
        oci.upload_status(upload),
        oci.patch(upload, b"x"),
        oci.put_upload(upload, sha256(b"x")),
        oci.cancel_upload(upload),
        oci.get_blob(name, ABSENT),
        oci.head_blob(name, ABSENT),
        oci.delete_blob(name, ABSENT),
        oci.get_manifest(name, "latest"),
        oci.push_manifest(name, "latest", b"{}", "application/vnd.oci.image.manifest.v1+json"),
        oci.delete_manifest(name, "latest"),
        oci.referrers(name, ABSENT),
    ]
    for response in calls:
        if response.request.method == "HEAD":
            assert response.status_code == 400
        else:
            assert_error(response, 400, "NAME_INVALID")


def test_an_unknown_valid_name_is_name_unknown(oci, robot):
    assert_error(oci.tags(f"{robot.project_id}/never-pushed"), 404, "NAME_UNKNOWN")


# -- tags ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag", ["latest", "v1.0.0", "1", "_private", "UPPER-lower_1.2", "a" * 128, "x--y..z__"]
)
def test_valid_tags(oci, robot, tag):
    name = f"{robot.project_id}/app"
    _, digest = oci.push_image(name, tag)
    got = oci.get_manifest(name, tag)
    assert got.status_code == 200, got.text
    assert got.headers["docker-content-digest"] == digest
    assert oci.tags(name).json()["tags"] == [tag]


@pytest.mark.parametrize("tag", [".hidden", "-dash", "a" * 129, "a+b", "a@b", "tag%20x", "é"])
def test_malformed_tags_cannot_be_pushed_and_name_nothing(oci, robot, tag):
    name = f"{robot.project_id}/app"
    oci.push_image(name, "latest")
    manifest = oci.get_manifest(name, "latest")
    pushed = oci.push_manifest(name, tag, manifest.content, manifest.headers["content-type"])
    assert_error(pushed, 400, "TAG_INVALID")
    # What can never be a tag names no manifest: 404, as the conformance suite wants.
    assert_error(oci.get_manifest(name, tag), 404, "MANIFEST_UNKNOWN")
    assert oci.head_manifest(name, tag).status_code == 404
    assert_error(oci.delete_manifest(name, tag), 404, "MANIFEST_UNKNOWN")
    assert oci.tags(name).json()["tags"] == ["latest"]


# -- digests -------------------------------------------------------------------------------


def test_sha256_and_sha512_digests_are_accepted(oci, robot):
    name = f"{robot.project_id}/app"
    data = b"content addressed"
    for digest in (sha256(data), sha512(data)):
        assert_error(oci.get_blob(name, digest), 404, "BLOB_UNKNOWN")
        started = oci.start_upload(name)
        pushed = oci.put_upload(started.headers["location"], digest, data)
        assert pushed.status_code == 201, pushed.text
        assert pushed.headers["docker-content-digest"] == digest
        got = oci.get_blob(name, digest)
        assert got.status_code == 200
        assert got.content == data
        assert got.headers["docker-content-digest"] == digest


BAD_DIGESTS = [
    "sha256:" + "0" * 63,  # too short
    "sha256:" + "0" * 65,  # too long
    "sha256:" + "g" * 64,  # not hex
    "sha256:" + "A" * 64,  # upper-case hex
    "sha512:" + "0" * 64,  # the length of another algorithm
    "sha256",
    "sha256:",
    ":" + "0" * 64,
    "SHA256:" + "0" * 64,
]
UNKNOWN_ALGORITHMS = ["md5:" + "0" * 32, "sha384:" + "0" * 96, "blake3:" + "0" * 64]


@pytest.mark.parametrize("digest", BAD_DIGESTS + UNKNOWN_ALGORITHMS)
def test_malformed_or_unsupported_digests_are_digest_invalid(oci, robot, digest):
    name = f"{robot.project_id}/app"
    oci.push_image(name, "latest")
    assert_error(oci.get_blob(name, digest), 400, "DIGEST_INVALID")
    assert_error(oci.delete_blob(name, digest), 400, "DIGEST_INVALID")
    assert_error(oci.referrers(name, digest), 400, "DIGEST_INVALID")
    started = oci.start_upload(name)
    assert started.status_code == 202
    assert_error(oci.put_upload(started.headers["location"], digest, b"x"), 400, "DIGEST_INVALID")
    assert_error(oci.start_upload(name, digest=digest), 400, "DIGEST_INVALID")
    mounted = oci.start_upload(name, mount=digest, **{"from": name})
    assert mounted.status_code == 202, mounted.text  # no mount: an upload starts instead
    if ":" in digest:  # otherwise it is a (malformed) tag
        assert_error(oci.get_manifest(name, digest), 400, "DIGEST_INVALID")
        assert_error(oci.delete_manifest(name, digest), 400, "DIGEST_INVALID")


def test_a_well_formed_unknown_digest_is_not_found(oci, robot):
    name = f"{robot.project_id}/app"
    oci.push_image(name, "latest")
    assert_error(oci.get_blob(name, ABSENT), 404, "BLOB_UNKNOWN")
    assert_error(oci.get_manifest(name, ABSENT), 404, "MANIFEST_UNKNOWN")
    assert_error(oci.delete_blob(name, ABSENT), 404, "BLOB_UNKNOWN")
    assert_error(oci.delete_manifest(name, ABSENT), 404, "MANIFEST_UNKNOWN")
