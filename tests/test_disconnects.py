"""A client that goes away in the middle of its request body, on every kind of route that
reads one: never a 500, never an ERROR line or a traceback in the log, never a 5xx in
/metrics, and the server goes on answering. Against a real `dockyard serve`, since what a
vanished client looks like to the app is the HTTP server's doing."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.oci_client import OCIClient, encode, image_manifest, sha256
from tests.support import Server, server_client, start_server
from tests.test_operations import samples

DECLARED = 1000  # the Content-Length sent; fewer bytes follow before the socket closes


@dataclass
class Served:
    server: Server
    oci: OCIClient
    project_id: str
    api_token: str
    registry_id: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for every route: each test looks only at the log written during it."""
    tmp_path = tmp_path_factory.mktemp("disconnects")
    server = start_server(tmp_path, f"sqlite:///{tmp_path / 'data' / 'dockyard.db'}")
    try:
        oci, project_id = server_client(server, server.env["DOCKYARD_DATABASE_URL"])
        api_token = (server.data_dir / "first-project-token").read_text().strip()
        listed = httpx.get(
            f"{server.url}/v1/container_registries",
            headers={"Authorization": f"Bearer {api_token}"},
            timeout=30,
        ).json()
        registry_id = listed["container_registries"][0]["id"]
        yield Served(server, oci, project_id, api_token, registry_id)
    finally:
        server.stop()


@dataclass(frozen=True)
class Cut:
    """A request whose body stops short: its method, path, headers and the part sent."""

    method: str
    path: str
    route: str  # its label in /metrics
    headers: dict[str, str]
    partial: bytes
    chunked: bool = False  # sent as one chunk of a chunked body, with no Content-Length


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _upload(served: Served) -> tuple[str, dict[str, str]]:
    """A fresh upload session's path and the push token for it."""
    name = f"{served.project_id}/app"
    started = served.oci.start_upload(name)
    assert started.status_code == 202, started.text
    location = httpx.URL(started.headers["location"])
    path = location.raw_path.decode()
    return path, _bearer(served.oci.tokens[f"repository:{name}:pull,push"])


def _form_post(path: str, partial: bytes) -> Cut:
    return Cut("POST", path, path, {"Content-Type": "application/x-www-form-urlencoded"}, partial)


def auth_token(_served: Served) -> Cut:
    return _form_post("/auth/token", b"grant_type=password&username=robot%24project-&password=pa")


def sign_in(_served: Served) -> Cut:
    return _form_post("/sign-in", b"nonce=abc&token=dky_")


def v1_create_json(served: Served) -> Cut:
    return Cut(
        "POST",
        "/v1/container_registries",
        "/v1/container_registries",
        {**_bearer(served.api_token), "Content-Type": "application/json"},
        b'{"name": "My Docker Hub", "registry_',
    )


def _v1_update(served: Served, content_type: str, partial: bytes) -> Cut:
    return Cut(
        "PATCH",
        f"/v1/container_registries/{served.registry_id}",
        "/v1/container_registries/{registry_id}",
        {**_bearer(served.api_token), "Content-Type": content_type},
        partial,
    )


def v1_update_form(served: Served) -> Cut:
    return _v1_update(served, "application/x-www-form-urlencoded", b"name=Renamed&host")


def v1_update_multipart(served: Served) -> Cut:
    partial = b'--XyZ\r\nContent-Disposition: form-data; name="name"\r\n\r\nRen'
    return _v1_update(served, "multipart/form-data; boundary=XyZ", partial)


def _upload_patch(served: Served, *, chunked: bool) -> Cut:
    path, token = _upload(served)
    return Cut(
        "PATCH",
        path,
        "/v2/{name}/blobs/uploads/{upload_id}",
        {**token, "Content-Type": "application/octet-stream"},
        b"x" * 300,
        chunked,
    )


def upload_chunk(served: Served) -> Cut:
    return _upload_patch(served, chunked=False)


def upload_chunk_chunked(served: Served) -> Cut:
    """As docker sends a layer: a chunked PATCH of unknown length."""
    return _upload_patch(served, chunked=True)


def upload_finish(served: Served) -> Cut:
    path, token = _upload(served)
    digest = sha256(b"x" * DECLARED)
    return Cut(
        "PUT",
        f"{path}{'&' if '?' in path else '?'}digest={digest}",
        "/v2/{name}/blobs/uploads/{upload_id}",
        {**token, "Content-Type": "application/octet-stream"},
        b"x" * 300,
    )


def upload_monolithic(served: Served) -> Cut:
    name = f"{served.project_id}/app"
    token = served.oci.token(f"repository:{name}:pull,push")
    return Cut(
        "POST",
        f"/v2/{name}/blobs/uploads/?digest={sha256(b'y' * DECLARED)}",
        "/v2/{name}/blobs/uploads/",
        {**_bearer(token), "Content-Type": "application/octet-stream"},
        b"y" * 300,
    )


def manifest_put(served: Served) -> Cut:
    name = f"{served.project_id}/app"
    token = served.oci.token(f"repository:{name}:pull,push")
    manifest = encode(image_manifest(b"{}", [b"layer"]))
    return Cut(
        "PUT",
        f"/v2/{name}/manifests/latest",
        "/v2/{name}/manifests/{reference}",
        {**_bearer(token), "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        manifest[:100],
    )


def _send_and_vanish(server: Server, cut: Cut) -> None:
    head = [f"{cut.method} {cut.path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    head += [f"{name}: {value}" for name, value in cut.headers.items()]
    assert len(cut.partial) < DECLARED
    body = cut.partial
    if cut.chunked:
        head.append("Transfer-Encoding: chunked")
        body = b"%x\r\n%s\r\n" % (len(body), body)  # and never the last, empty chunk
    else:
        head.append(f"Content-Length: {DECLARED}")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)


def _answered(server: Server, method: str, route: str) -> dict[str, float]:
    scraped = samples(httpx.get(f"{server.url}/metrics", timeout=10).text)
    counts: dict[str, float] = {}
    for (metric, pairs), value in scraped.items():
        labels = dict(pairs)
        if (
            metric == "dockyard_http_requests_total"
            and labels["method"] == method
            and labels["route"] == route
        ):
            counts[labels["status"]] = value
    return counts


@pytest.mark.parametrize(
    "make_cut",
    [
        auth_token,
        sign_in,
        v1_create_json,
        v1_update_form,
        v1_update_multipart,
        upload_chunk,
        upload_chunk_chunked,
        upload_finish,
        upload_monolithic,
        manifest_put,
    ],
)
def test_a_client_gone_mid_body_is_no_server_error(
    served: Served, make_cut: Callable[[Served], Cut]
) -> None:
    server = served.server
    cut = make_cut(served)
    before = _answered(server, cut.method, cut.route)
    logged = len(server.log())

    _send_and_vanish(server, cut)
    deadline = time.monotonic() + 30
    after = before
    while sum(after.values()) == sum(before.values()):
        assert time.monotonic() < deadline, "the cut request was never counted"
        time.sleep(0.1)
        after = _answered(server, cut.method, cut.route)

    grown = {status for status, n in after.items() if n > before.get(status, 0)}
    written = server.log()[logged:]
    # nginx's "client closed request": no 5xx, and no 4xx blaming the client either
    assert grown == {"499"}, written
    assert "Traceback" not in written, written
    assert "ERROR" not in written, written
    quiet = f"INFO dockyard.http: client went away before its request body ended: {cut.method}"
    assert quiet in written, written
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
