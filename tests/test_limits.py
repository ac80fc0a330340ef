"""Every limit a client can run into, each with a clear refusal that changes nothing."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from starlette.requests import Request

from dockyard.app import create_app
from dockyard.db.models import Upload, utcnow
from dockyard.domain.registry_fields import MAX_HOSTNAME, MAX_NAME, MAX_PASSWORD, MAX_USERNAME
from tests.oci_client import (
    OCI_MANIFEST,
    OCIClient,
    assert_error,
    encode,
    generate_credentials,
    image_manifest,
    sha256,
)
from tests.support import start_server

V1 = "/v1/container_registries"
HUB = {"name": "Hub", "registry_type": "docker_hub"}


@pytest.fixture
def limited(make_client, project):
    """A client of an app with small limits, and an OCI client of the project's robot."""

    def make(**limits):
        client = make_client(**limits)
        creds = generate_credentials(client, project.api_token)
        return client, OCIClient(client, creds["username"], creds["password"])

    return make


def listing(client, auth) -> list:
    response = client.get(V1, headers=auth)
    assert response.status_code == 200
    return response.json()["container_registries"]


# -- /v1 body size ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_v1_body_over_max_body_bytes_is_413(make_client, project, chunked):
    client = make_client(max_body_bytes=1024)
    auth = {"Authorization": f"Bearer {project.api_token}"}
    before = listing(client, auth)
    body = json.dumps({**HUB, "name": "x" * 2000}).encode()
    content = iter([body[:500], body[500:]]) if chunked else body
    response = client.post(
        V1, content=content, headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert response.json() == {"errors": ["Request body is too large; the limit is 1024 bytes"]}
    assert listing(client, auth) == before


@pytest.mark.parametrize("declared", ["9" * 5000, "\u00b2", "0" * 30 + "12"])
def test_a_strange_content_length_is_no_server_error(client, auth, declared):
    # Once a 500: int() of 5000 digits raises, and "²".isdigit() is true.
    before = listing(client, auth)
    body = json.dumps(HUB).encode()
    headers = {**auth, "Content-Type": "application/json", "Content-Length": declared}
    response = client.post(
        V1, content=body, headers={k: v.encode("latin-1") for k, v in headers.items()}
    )
    assert response.status_code in (200, 413), response.text
    if declared == "9" * 5000:
        assert response.status_code == 413
    else:
        assert listing(client, auth) != before  # the body itself was within the limit


# -- /v1 field lengths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "limit", "label"),
    [
        ("name", MAX_NAME, "Name"),
        ("hostname", MAX_HOSTNAME, "Hostname"),
        ("username", MAX_USERNAME, "Username"),
        ("password", MAX_PASSWORD, "Password"),
    ],
)
def test_v1_fields_have_the_documented_maximum_length(client, auth, field, limit, label):
    def body(length: int) -> dict:
        value = "a" * length
        if field == "hostname":
            labels = ["a" * 63] * (length // 64) + ["a" * (length % 64 or 1)]
            value = ".".join(labels)[:length].rstrip(".")
            value = value if len(value) == length else value + "a"
        fields = {"name": "N", "registry_type": "custom", "hostname": "cr.example.com"}
        if field in ("username", "password"):
            fields.update(username="u", password="p")
        return {**fields, field: value}

    before = listing(client, auth)
    refused = client.post(V1, json=body(limit + 1), headers=auth)
    assert refused.status_code == 400, refused.text
    assert f"{label} is too long (maximum is {limit} characters)" in refused.json()["errors"]
    assert listing(client, auth) == before
    # The document says the same, so a generated client checks it before sending.
    schema = client.get("/openapi.json").json()
    create = schema["paths"][V1]["post"]["requestBody"]["content"]["application/json"]["schema"]
    declared = create["properties"][field]
    assert limit in [declared.get("maxLength")] + [
        o.get("maxLength") for o in declared.get("anyOf", [])
    ]


def test_the_longest_name_is_accepted(client, auth):
    created = client.post(V1, json={**HUB, "name": "n" * MAX_NAME}, headers=auth)
    assert created.status_code == 200, created.text


# -- manifests -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_manifest_over_max_manifest_bytes_is_413_and_stores_nothing(limited, project, chunked):
    client, oci = limited(max_manifest_bytes=1024)
    name = f"{project.id}/app"
    content, _ = oci.push_image(name, "v1")
    big = encode(image_manifest(b"{}", [b"layer"], annotations={"a": "x" * 2000}))
    body = iter([big[:600], big[600:]]) if chunked else big
    token = oci.token(f"repository:{name}:pull,push")
    response = client.put(
        f"/v2/{name}/manifests/v2",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": OCI_MANIFEST},
    )
    error = assert_error(response, 413, "MANIFEST_INVALID")
    assert "larger than 1024 bytes" in error["message"]
    assert oci.tags(name).json()["tags"] == ["v1"]
    assert oci.get_manifest(name, "v1").content == content


# -- page sizes ------------------------------------------------------------------------------


def test_n_is_capped_at_max_page_size(limited, project):
    _, oci = limited(max_page_size=2)
    name = f"{project.id}/app"
    _, digest = oci.push_image(name, "a")
    for tag in ("b", "c"):
        assert (
            oci.push_manifest(
                name, tag, oci.get_manifest(name, digest).content, OCI_MANIFEST
            ).status_code
            == 201
        )
    for other in ("one", "two", "three"):
        oci.push_image(f"{project.id}/{other}", "v1")
    for n in ("100000", "9" * 5000, ""):
        tags = oci.tags(name, n=n)
        assert tags.status_code == 200, tags.text
        assert tags.json()["tags"] == ["a", "b"]
        assert 'rel="next"' in tags.headers["link"]
        catalog = oci.catalog(n=n)
        assert catalog.status_code == 200, catalog.text
        assert len(catalog.json()["repositories"]) == 2


@pytest.mark.parametrize("n", ["-1", "1.5", "abc", "\u00b2", "\u0661"])
def test_n_that_is_no_number_is_pagination_number_invalid(client, robot, n):
    # "²" was a 500: isdigit() is true, int() fails.
    oci = OCIClient(client, robot.username, robot.password)
    name = f"{robot.project_id}/app"
    oci.push_image(name, "v1")
    assert_error(oci.tags(name, n=n), 400, "PAGINATION_NUMBER_INVALID")
    assert_error(oci.catalog(n=n), 400, "PAGINATION_NUMBER_INVALID")


# -- upload sessions -------------------------------------------------------------------------


def open_uploads(client) -> int:
    with client.app.state.services.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Upload)))


def test_upload_sessions_per_repository_are_limited_with_429(limited, project):
    client, oci = limited(max_uploads_per_repository=3)
    name, other = f"{project.id}/app", f"{project.id}/other"
    locations = []
    for _ in range(3):
        started = oci.start_upload(name)
        assert started.status_code == 202, started.text
        locations.append(started.headers["location"])

    refused = oci.start_upload(name)
    error = assert_error(refused, 429, "TOOMANYREQUESTS")
    assert "3 unfinished uploads" in error["message"]
    assert "cancel" in error["message"]
    assert error["detail"] == {"max_uploads_per_repository": 3}
    assert_error(oci.push_blob(name, b"monolithic"), 429, "TOOMANYREQUESTS")
    assert open_uploads(client) == 3  # the refusals opened nothing
    # Another repository has sessions of its own.
    assert oci.start_upload(other).status_code == 202
    # A mount opens no session, so it is allowed at the limit.
    assert oci.push_blob(other, b"layer").status_code == 201
    mounted = oci.mount_blob(name, sha256(b"layer"), other)
    assert mounted.status_code == 201, mounted.text
    # Cancelling or finishing one makes room for one more.
    assert oci.cancel_upload(locations[0]).status_code == 204
    assert oci.start_upload(name).status_code == 202
    assert_error(oci.start_upload(name), 429, "TOOMANYREQUESTS")


def test_expired_upload_sessions_do_not_count(limited, project):
    client, oci = limited(max_uploads_per_repository=2, upload_ttl_seconds=60)
    name = f"{project.id}/app"
    for _ in range(2):
        assert oci.start_upload(name).status_code == 202
    assert_error(oci.start_upload(name), 429, "TOOMANYREQUESTS")
    # Abandoned two minutes ago: garbage collection would remove them.
    with client.app.state.services.db.write() as session:
        session.execute(update(Upload).values(updated_at=utcnow() - timedelta(minutes=2)))
    assert oci.start_upload(name).status_code == 202


# -- repository names ------------------------------------------------------------------------


def test_a_repository_name_over_255_characters_is_name_invalid(client, robot):
    oci = OCIClient(client, robot.username, robot.password)
    prefix = f"{robot.project_id}/"
    name = prefix + "a" * (256 - len(prefix))
    error = assert_error(oci.push_blob(name, b"x"), 400, "NAME_INVALID")
    assert "longer than 255" in error["message"]
    assert oci.catalog().json()["repositories"] == []


# -- header sizes, on a real server ----------------------------------------------------------


def raw_request(port: int, header_bytes: int) -> bytes:
    """The first bytes of the answer to a GET with one header of `header_bytes`."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"GET /v1/regions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {'a' * header_bytes}\r\n\r\n"
        sock.sendall(head.encode())
        return sock.recv(4096)


@pytest.fixture(params=["granian", "uvicorn"])
def real_server(request, tmp_path):
    # SQLite only: what answers is the HTTP server in front of the app, not the database.
    srv = start_server(
        tmp_path, f"sqlite:///{tmp_path / 'data' / 'dockyard.db'}", server=request.param
    )
    yield srv
    srv.stop()


def test_huge_headers_get_a_4xx_at_once_not_a_hang_or_500(real_server):
    # 60 KB passes (a 401: no token); 100 KB is the app's 431, 1 MB granian's own.
    for size, expected in [(60_000, b"401"), (100_000, b"431"), (1_000_000, b"431")]:
        # A hang would end in the socket's timeout, with no answer to read.
        answer = raw_request(real_server.port, size)
        assert answer.startswith(b"HTTP/1.1 " + expected), (size, answer[:200])
    many = {f"X-H{i}": "a" * 100 for i in range(5000)}  # granian refuses these itself
    assert httpx.get(f"{real_server.url}/v1/regions", headers=many, timeout=10).status_code == 431
    big = {"X-Big": "a" * 100_000}
    refused = httpx.get(f"{real_server.url}/v1/regions", headers=big, timeout=10)
    assert refused.status_code == 431
    assert "allowed" in refused.json()["errors"][0]
    refused = httpx.get(f"{real_server.url}/v2/", headers=big, timeout=10)
    assert refused.status_code == 431
    assert refused.json()["errors"][0]["code"] == "SIZE_INVALID"
    assert httpx.get(f"{real_server.url}/healthz", timeout=5).status_code == 200


FORM = "application/x-www-form-urlencoded"
NAME = "00000000-0000-4000-8000-000000000001/app"  # a repository of a project nobody has


def answer_head(sock: socket.socket) -> bytes:
    """The status line and headers of the answer on `sock`, lower-cased."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return head.split(b"\r\n\r\n")[0].lower()


def test_an_answer_before_the_body_is_read_says_the_connection_closes(real_server):
    # A blob pushed without a token is refused before its bytes are read; the rest of them
    # are still on the connection, which the server cannot take another request from.
    with socket.create_connection(("127.0.0.1", real_server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /v2/{NAME}/blobs/uploads/?digest=sha256:{'0' * 64} HTTP/1.1\r\n".encode()
            + b"Host: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n"
            + b"x" * 10_000
        )
        head = answer_head(sock)
    assert head.startswith(b"http/1.1 401"), head
    assert b"\r\nconnection: close" in head, head
    # A body read to its end leaves the connection open for the next request.
    conn = http.client.HTTPConnection("127.0.0.1", real_server.port, timeout=10)
    try:
        form = "grant_type=password&username=nobody&password=wrong"
        for _ in range(2):
            conn.request("POST", "/auth/token", body=form, headers={"Content-Type": FORM})
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 401
            assert not answer.will_close, answer.headers
    finally:
        conn.close()


def test_a_client_that_pushes_before_its_login_goes_on_without_a_dead_connection(real_server):
    # As the OCI client of these tests pushes: a monolithic POST, its 401 challenge, then the
    # token request on what the client takes for a connection to keep.
    blob = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with httpx.Client(base_url=real_server.url, timeout=30) as client:
        for _ in range(20):
            refused = client.post(f"/v2/{NAME}/blobs/uploads/?digest={digest}", content=blob)
            assert refused.status_code == 401
            assert client.get("/v2/").status_code == 401


def test_a_500_says_the_connection_closes_and_names_its_request(services, settings):
    # Starlette answers an unhandled error outside the middlewares added to the app; the
    # failing route here never reads the request's body.
    app = create_app(settings, services)

    async def broken(request: Request) -> None:
        raise RuntimeError("a bug")

    app.add_route("/broken", broken, methods=["POST"])
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/broken", content=b"x" * 1000)
    assert answer.status_code == 500
    assert answer.json() == {"errors": ["Something went wrong on our side; please try again"]}
    assert answer.headers["connection"] == "close"
    assert answer.headers["x-request-id"]
