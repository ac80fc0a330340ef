"""/v2/<name>/blobs: every upload shape, upload sessions, fetching, mounting and deleting."""

from __future__ import annotations

import os

import pytest

from tests.oci_client import (
    OCIClient,
    assert_error,
    assert_unauthorized,
    parse_challenge,
    sha256,
)

SHAPES = ["single_post", "post_put", "stream", "chunked", "chunked_put"]


@pytest.fixture
def name(robot) -> str:
    return f"{robot.project_id}/app"


def location_of(oci: OCIClient, name: str) -> str:
    started = oci.start_upload(name)
    assert started.status_code == 202, started.text
    return str(started.headers["location"])


def assert_absent(oci: OCIClient, name: str, digest: str) -> None:
    assert oci.head_blob(name, digest).status_code == 404
    assert_error(oci.get_blob(name, digest), 404, "BLOB_UNKNOWN")


# -- upload shapes -------------------------------------------------------------------------


@pytest.mark.parametrize("how", SHAPES)
@pytest.mark.parametrize("size", [0, 1, 10_000, 3 * 1024 * 1024 + 7], ids=["0", "1", "10k", "3M"])
def test_every_upload_shape_stores_the_exact_bytes(oci, name, how, size):
    data = os.urandom(size)
    digest = sha256(data)
    pushed = oci.push_blob(name, data, how, chunk=max(1, size // 3 + 1))
    assert pushed.status_code == 201, pushed.text
    assert pushed.headers["location"] == f"/v2/{name}/blobs/{digest}"
    assert pushed.headers["docker-content-digest"] == digest
    got = oci.get_blob(name, digest)
    assert got.status_code == 200
    assert got.content == data


def test_pushing_a_blob_twice_is_fine(oci, name, robot):
    for how in SHAPES:
        assert oci.push_blob(name, b"same bytes", how).status_code == 201
    other = f"{robot.project_id}/other"
    assert oci.push_blob(other, b"same bytes").status_code == 201
    assert oci.get_blob(other, sha256(b"same bytes")).content == b"same bytes"


def test_a_post_put_without_a_body_and_a_trailing_upload_url(oci, name):
    location = location_of(oci, name)
    assert location.startswith(f"/v2/{name}/blobs/uploads/")
    patched = oci.patch(location, b"abc")
    assert patched.status_code == 202
    done = oci.put_upload(patched.headers["location"], sha256(b"abc"))
    assert done.status_code == 201, done.text
    assert oci.get_blob(name, sha256(b"abc")).content == b"abc"


# -- upload sessions -----------------------------------------------------------------------


def test_upload_status_reports_the_offset(oci, name):
    started = oci.start_upload(name)
    assert started.status_code == 202
    location = started.headers["location"]
    upload_id = location.rsplit("/", 1)[1]
    assert started.headers["range"] == "0-0"
    assert started.headers["docker-upload-uuid"] == upload_id
    assert started.content == b""

    status = oci.upload_status(location)
    assert status.status_code == 204
    assert status.headers["range"] == "0-0"

    patched = oci.patch(location, b"0123456789", content_range="0-9")
    assert patched.status_code == 202
    assert patched.headers["range"] == "0-9"
    assert patched.headers["location"] == location
    assert patched.headers["docker-upload-uuid"] == upload_id

    status = oci.upload_status(location)
    assert status.status_code == 204
    assert status.headers["range"] == "0-9"
    assert status.headers["location"] == location
    assert status.headers["docker-upload-uuid"] == upload_id

    assert oci.patch(location, b"abc", stream=True).headers["range"] == "0-12"
    assert oci.upload_status(location).headers["range"] == "0-12"


def test_an_out_of_order_chunk_is_416_and_the_upload_goes_on(oci, name):
    location = location_of(oci, name)
    assert oci.patch(location, b"0123456789", content_range="0-9").status_code == 202
    for span in ("20-29", "5-14", "0-9", "11-20"):
        refused = oci.patch(location, b"x" * 10, content_range=span)
        assert_error(refused, 416, "RANGE_INVALID")
        assert refused.headers["range"] == "0-9"
        assert refused.headers["location"] == location
    assert oci.upload_status(location).headers["range"] == "0-9"
    resumed = oci.patch(location, b"abcdefghij", content_range="10-19")
    assert resumed.headers["range"] == "0-19"
    done = oci.put_upload(location, sha256(b"0123456789abcdefghij"))
    assert done.status_code == 201, done.text


@pytest.mark.parametrize("span", ["0-", "a-b", "bytes=0-9", "9-0", "-5"])
def test_a_malformed_content_range_is_416(oci, name, span):
    location = location_of(oci, name)
    refused = oci.patch(location, b"0123456789", content_range=span)
    assert_error(refused, 416, "RANGE_INVALID")
    assert refused.headers["range"] == "0-0"


def test_content_range_and_length_must_agree(oci, name):
    location = location_of(oci, name)
    refused = oci.patch(location, b"0123456789", content_range="0-4")
    assert_error(refused, 416, "RANGE_INVALID")
    assert oci.upload_status(location).headers["range"] == "0-0"


def test_a_short_body_is_size_invalid(oci, name):
    location = location_of(oci, name)
    refused = oci.request(
        "PATCH",
        location,
        scope=f"repository:{name}:pull,push",
        headers={"Content-Length": "20"},
        content=b"0123456789",
    )
    assert_error(refused, 400, "SIZE_INVALID")
    assert oci.upload_status(location).headers["range"] == "0-0"
    assert oci.push_blob(name, b"fine").status_code == 201


def test_a_cancelled_upload_is_unknown(oci, name):
    location = location_of(oci, name)
    assert oci.patch(location, b"partial").status_code == 202
    cancelled = oci.cancel_upload(location)
    assert cancelled.status_code == 204
    assert_error(oci.upload_status(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(oci.patch(location, b"more"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(oci.put_upload(location, sha256(b"partial")), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(oci.cancel_upload(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_absent(oci, name, sha256(b"partial"))


@pytest.mark.parametrize(
    "upload_id",
    ["59779923-3e18-4258-ba46-52ab8aacef66", "not-a-uuid", "0"],  # fixed for xdist
)
def test_an_unknown_upload_is_blob_upload_unknown(oci, name, upload_id):
    oci.push_blob(name, b"the repository exists")
    location = f"/v2/{name}/blobs/uploads/{upload_id}"
    assert_error(oci.upload_status(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(oci.patch(location, b"x"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(oci.put_upload(location, sha256(b"x"), b"x"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(oci.cancel_upload(location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_an_upload_belongs_to_its_repository(oci, name, robot):
    location = location_of(oci, name)
    elsewhere = location.replace(f"/v2/{name}/", f"/v2/{robot.project_id}/other/")
    oci.push_blob(f"{robot.project_id}/other", b"make it exist")
    assert_error(oci.upload_status(elsewhere), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(oci.patch(elsewhere, b"x"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert oci.upload_status(location).status_code == 204


def test_an_upload_of_another_project_is_out_of_reach(oci, name, client, other_robot):
    location = location_of(oci, name)
    neighbour = OCIClient(client, other_robot.username, other_robot.password)
    assert_unauthorized(neighbour.upload_status(location), "insufficient_scope")
    assert_unauthorized(neighbour.patch(location, b"x"), "insufficient_scope")
    assert_unauthorized(neighbour.cancel_upload(location), "insufficient_scope")
    assert oci.upload_status(location).status_code == 204


# -- digests at the end of an upload -------------------------------------------------------


@pytest.mark.parametrize("how", ["single_post", "post_put", "patch_then_put"])
def test_a_digest_mismatch_stores_nothing(oci, name, how):
    data, claimed = b"the real content", sha256(b"something else")
    if how == "single_post":
        refused = oci.request(
            "POST",
            f"/v2/{name}/blobs/uploads/",
            scope=f"repository:{name}:pull,push",
            params={"digest": claimed},
            content=data,
        )
        location = None
    else:
        location = location_of(oci, name)
        if how == "patch_then_put":
            assert oci.patch(location, data).status_code == 202
            refused = oci.put_upload(location, claimed)
        else:
            refused = oci.put_upload(location, claimed, data)
    error = assert_error(refused, 400, "DIGEST_INVALID")
    assert error["detail"] == {"expected": claimed, "actual": sha256(data)}
    assert_absent(oci, name, claimed)
    assert_absent(oci, name, sha256(data))
    if location is not None:
        assert_error(oci.upload_status(location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_the_closing_put_needs_a_digest(oci, name):
    location = location_of(oci, name)
    assert oci.patch(location, b"data").status_code == 202
    assert_error(oci.put_upload(location, None), 400, "DIGEST_INVALID")
    assert_error(oci.put_upload(location, ""), 400, "DIGEST_INVALID")
    assert_absent(oci, name, sha256(b"data"))
    assert oci.put_upload(location, sha256(b"data")).status_code == 201


# -- fetching ------------------------------------------------------------------------------


def test_get_and_head_of_a_blob(oci, name):
    data = os.urandom(5000)
    digest = sha256(data)
    oci.push_blob(name, data)
    got = oci.get_blob(name, digest)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-length"] == "5000"
    assert got.headers["docker-content-digest"] == digest
    assert got.headers["etag"] == f'"{digest}"'
    assert got.headers["content-type"] == "application/octet-stream"
    head = oci.head_blob(name, digest)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == "5000"
    assert head.headers["docker-content-digest"] == digest
    assert head.headers["etag"] == f'"{digest}"'


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=4990-", 4990, 4999),
        ("bytes=-7", 4993, 4999),
        ("bytes=4000-9999", 4000, 4999),
    ],
)
def test_a_range_request_is_206_with_those_bytes(oci, name, header, start, end):
    data = os.urandom(5000)
    digest = sha256(data)
    oci.push_blob(name, data)
    got = oci.get_blob(name, digest, headers={"Range": header})
    assert got.status_code == 206, got.text
    assert got.content == data[start : end + 1]
    assert got.headers["content-range"] == f"bytes {start}-{end}/5000"
    assert got.headers["content-length"] == str(end - start + 1)
    assert got.headers["docker-content-digest"] == digest


def test_an_unsatisfiable_range_is_416(oci, name):
    oci.push_blob(name, b"0123456789")
    refused = oci.get_blob(name, sha256(b"0123456789"), headers={"Range": "bytes=10-20"})
    assert_error(refused, 416, "RANGE_INVALID")
    assert refused.headers["content-range"] == "bytes */10"


@pytest.mark.parametrize("header", ["bytes=5-2", "items=0-1", "bytes=abc", "bytes=-"])
def test_a_malformed_range_is_ignored_and_the_whole_blob_sent(oci, name, header):
    data = os.urandom(100)
    oci.push_blob(name, data)
    got = oci.get_blob(name, sha256(data), headers={"Range": header})
    assert got.status_code == 200
    assert got.content == data


def test_an_unknown_blob_and_an_unknown_repository(oci, name, robot):
    assert_absent(oci, f"{robot.project_id}/never-pushed", sha256(b"x"))
    oci.push_blob(name, b"x")
    assert_absent(oci, name, sha256(b"y"))


# -- mounting across repositories ----------------------------------------------------------


def test_mount_within_the_project(oci, name, robot):
    data = os.urandom(1000)
    digest = sha256(data)
    oci.push_blob(name, data)
    target = f"{robot.project_id}/copy"
    mounted = oci.mount_blob(target, digest, name)
    assert mounted.status_code == 201, mounted.text
    assert mounted.headers["location"] == f"/v2/{target}/blobs/{digest}"
    assert mounted.headers["docker-content-digest"] == digest
    assert oci.get_blob(target, digest).content == data
    # The mount is a link of its own: deleting the source's leaves the copy readable.
    assert oci.delete_blob(name, digest).status_code == 202
    assert oci.get_blob(target, digest).content == data


def test_a_mount_that_cannot_be_done_starts_an_upload(oci, name, robot):
    oci.push_blob(name, b"present")
    target = f"{robot.project_id}/copy"
    for digest, source in [
        (sha256(b"absent"), name),  # no such blob in the source
        (sha256(b"present"), f"{robot.project_id}/nowhere"),  # no such repository
        (sha256(b"present"), "Not/A/Name"),
        (sha256(b"present"), ""),
        ("sha256:zz", name),  # a malformed digest
    ]:
        fallback = oci.mount_blob(target, digest, source)
        assert fallback.status_code == 202, fallback.text
        assert fallback.headers["location"].startswith(f"/v2/{target}/blobs/uploads/")
        assert oci.upload_status(fallback.headers["location"]).status_code == 204
    assert_absent(oci, target, sha256(b"present"))


def test_a_mount_needs_a_token_that_may_pull_the_source(oci, name, robot):
    oci.push_blob(name, b"present")
    target = f"{robot.project_id}/copy"
    token = oci.token(f"repository:{target}:pull,push")  # the source was not asked for
    fallback = oci.request(
        "POST",
        f"/v2/{target}/blobs/uploads/",
        token=token,
        params={"mount": sha256(b"present"), "from": name},
    )
    assert fallback.status_code == 202
    assert_absent(oci, target, sha256(b"present"))


def test_mount_from_another_project_falls_back_and_reads_nothing(oci, name, client, other_robot):
    data = b"project A's secret layer"
    digest = sha256(data)
    oci.push_blob(name, data)
    neighbour = OCIClient(client, other_robot.username, other_robot.password)
    theirs = f"{other_robot.project_id}/app"
    fallback = neighbour.mount_blob(theirs, digest, name)
    assert fallback.status_code == 202, fallback.text
    assert_absent(neighbour, theirs, digest)
    assert_unauthorized(neighbour.get_blob(name, digest), "insufficient_scope")
    head = neighbour.head_blob(name, digest)
    assert head.status_code == 401
    assert parse_challenge(head.headers["www-authenticate"])["error"] == "insufficient_scope"


def test_another_project_cannot_read_a_blob_by_its_digest(oci, name, client, other_robot):
    data = b"project A's layer"
    digest = sha256(data)
    oci.push_blob(name, data)
    neighbour = OCIClient(client, other_robot.username, other_robot.password)
    theirs = f"{other_robot.project_id}/app"
    assert_absent(neighbour, theirs, digest)  # the repository does not even exist
    neighbour.push_blob(theirs, b"their own layer")
    assert_absent(neighbour, theirs, digest)  # it does now; the blob is still not linked
    assert_unauthorized(neighbour.get_blob(name, digest), "insufficient_scope")
    assert_unauthorized(neighbour.delete_blob(name, digest), "insufficient_scope")
    assert oci.get_blob(name, digest).content == data


def test_pushing_the_same_bytes_in_another_project_links_them_there(oci, name, client, other_robot):
    data = b"common base layer"
    oci.push_blob(name, data)
    neighbour = OCIClient(client, other_robot.username, other_robot.password)
    theirs = f"{other_robot.project_id}/app"
    assert neighbour.push_blob(theirs, data, "chunked", chunk=5).status_code == 201
    assert neighbour.get_blob(theirs, sha256(data)).content == data
    assert neighbour.delete_blob(theirs, sha256(data)).status_code == 202
    assert oci.get_blob(name, sha256(data)).content == data


# -- deleting ------------------------------------------------------------------------------


def test_blob_delete_is_202_then_404(oci, name):
    oci.push_blob(name, b"doomed")
    digest = sha256(b"doomed")
    deleted = oci.delete_blob(name, digest)
    assert deleted.status_code == 202
    assert_absent(oci, name, digest)
    assert_error(oci.delete_blob(name, digest), 404, "BLOB_UNKNOWN")
    assert_error(oci.delete_blob(f"{name}-never", digest), 404, "BLOB_UNKNOWN")
    assert oci.push_blob(name, b"doomed").status_code == 201  # and it can come back
    assert oci.get_blob(name, digest).content == b"doomed"
