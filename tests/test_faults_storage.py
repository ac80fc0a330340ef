"""Storage that fails (a full disk, an S3 that answers 500 or stops answering) is a 503 the
clients retry, within a bounded time; nothing half-written becomes a blob, no manifest
points at nothing, and the registry works again as soon as storage does."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import boto3
import httpx
import pytest
from fastapi.testclient import TestClient

from dockyard.config import StorageSettings
from dockyard.storage.s3 import S3BlobStore, client_config
from tests.conftest import Robot, require_or_skip
from tests.oci_client import OCI_MANIFEST, OCIClient, assert_error, encode, image_manifest, sha256
from tests.s3_proxy import S3Proxy, answer_error
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.support import server_client, start_server

BOUND_SECONDS = 10.0  # the longest a failing request may take before it says so
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def assert_unavailable(response: httpx.Response, started: float) -> None:
    assert time.monotonic() - started < BOUND_SECONDS, "the failure took too long to say so"
    assert_error(response, 503, "UNAVAILABLE")
    assert "retry-after" in response.headers


# -- a full disk ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that really fills up (ENOSPC from the kernel, not a mock)."""
    if os.geteuid() != 0:
        require_or_skip("a small tmpfs for the full-disk test needs root to mount it")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        require_or_skip(f"cannot mount a tmpfs for the full-disk test: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _stored_bytes(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): path.stat().st_size
        for path in root.rglob("*")
        if path.is_file()
    }


@SQLITE_ONLY
def test_a_full_disk_is_a_503_and_the_push_succeeds_once_space_is_freed(
    tmp_path: Path, database_url: str, small_disk: Path
) -> None:
    store_root = small_disk / "store"
    server = start_server(tmp_path / "serve", database_url, storage__path=str(store_root))
    try:
        oci, project_id = server_client(server, database_url)
        name = f"{project_id}/app"
        ballast = small_disk / "ballast"
        ballast.write_bytes(b"\0" * (3 * 1024 * 1024 + 512 * 1024))  # half a MiB left
        layer = os.urandom(2 * 1024 * 1024)
        config = b'{"architecture":"amd64","os":"linux"}'
        assert oci.push_blob(name, config).status_code == 201  # small things still fit

        # A session (POST, then PUT with the body) and a monolithic POST: both hit ENOSPC
        # half-way through the layer.
        started = oci.start_upload(name)
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        began = time.monotonic()
        assert_unavailable(oci.put_upload(location, sha256(layer), layer), began)
        began = time.monotonic()
        assert_unavailable(oci.push_blob(name, layer), began)

        # Nothing of the layer is a blob, and what was half-written has been given back.
        assert oci.head_blob(name, sha256(layer)).status_code == 404
        stored = _stored_bytes(store_root)
        assert not [key for key, size in stored.items() if key.startswith("uploads/") and size]
        assert sum(size for key, size in stored.items() if key.startswith("blobs/")) == len(config)
        status = oci.upload_status(location)
        assert status.status_code == 204 and status.headers["range"] == "0-0"
        # A manifest cannot name the layer that never arrived.
        manifest = encode(image_manifest(config, [layer]))
        refused = oci.push_manifest(name, "v1", manifest, OCI_MANIFEST)
        assert_error(refused, 400, "MANIFEST_BLOB_UNKNOWN")

        ballast.unlink()
        # The same session goes on, as a client retrying the PUT does.
        done = oci.put_upload(location, sha256(layer), layer)
        assert done.status_code == 201, done.text
        assert oci.push_manifest(name, "v1", manifest, OCI_MANIFEST).status_code == 201
        pulled = oci.get_blob(name, sha256(layer))
        assert pulled.status_code == 200
        assert hashlib.sha256(pulled.content).hexdigest() == sha256(layer).removeprefix("sha256:")
        assert oci.get_manifest(name, "v1").content == manifest
        oci.http.close()
    finally:
        server.stop()


# -- S3 that fails -------------------------------------------------------------------------

INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)


class FaultyS3Proxy(S3Proxy):
    """Forwards to the real S3 server while `mode` is "healthy"; answers 500 InternalError
    to everything while it is "failing"; reads each request and never answers it while it
    is "stalled" (until it heals)."""

    def __init__(self, upstream: str) -> None:
        self.mode = "healthy"
        self.faults = 0
        self.healed = threading.Event()
        super().__init__(upstream)

    def intercept(self, handler: BaseHTTPRequestHandler) -> bool:
        mode = self.mode
        if mode == "healthy":
            return False
        self.faults += 1
        if mode == "stalled":
            self.healed.wait(30)
            handler.close_connection = True  # and never a word
        else:
            answer_error(handler, 500, INTERNAL_ERROR)
        return True

    def fail(self, mode: str) -> None:
        self.healed.clear()
        self.mode = mode

    def heal(self) -> None:
        self.mode = "healthy"
        self.healed.set()

    def close(self) -> None:
        self.heal()
        super().close()


@pytest.fixture
def faulty_s3(s3_server: S3Server) -> Iterator[FaultyS3Proxy]:
    proxy = FaultyS3Proxy(s3_server.endpoint)
    yield proxy
    proxy.close()


def _s3_client(
    make_client: Callable[..., TestClient], proxy: FaultyS3Proxy, robot: Robot
) -> OCIClient:
    """The app on S3 through the proxy, its store's client with the timeouts made short
    (2 s, 2 attempts: a loaded machine may take over 1 s for a healthy put) so that a stall
    shows within the test's time."""
    prefix = f"faults-{os.urandom(4).hex()}"
    storage = StorageSettings.model_validate(
        {
            "type": "s3",
            "bucket": "dockyard-test",
            "prefix": prefix,
            "endpoint_url": proxy.endpoint,
            "region": "us-east-1",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "path_style": True,
            "part_size_mib": 5,
        }
    )
    client = make_client(storage=storage.model_dump())
    stores = client.app.state.services.registry.stores  # type: ignore[attr-defined]
    s3 = boto3.client(
        "s3",
        endpoint_url=proxy.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=client_config(path_style=True, max_attempts=2, connect_timeout=1, read_timeout=2),
    )
    for region_id in stores:
        stores[region_id] = S3BlobStore(s3, "dockyard-test", prefix, part_size=5 * 1024 * 1024)
    return OCIClient(client, robot.username, robot.password)


@SQLITE_ONLY
@pytest.mark.parametrize("mode", ["failing", "stalled"])
def test_s3_errors_and_stalls_are_503s_within_bounds_and_the_registry_recovers(
    make_client: Callable[..., TestClient], faulty_s3: FaultyS3Proxy, robot: Robot, mode: str
) -> None:
    oci = _s3_client(make_client, faulty_s3, robot)
    name = f"{robot.project_id}/app"
    before = os.urandom(64 * 1024)
    assert oci.push_blob(name, before).status_code == 201
    oci.token(f"repository:{name}:pull,push")  # the token service needs no storage

    started = oci.start_upload(name)  # a session begun before the failure goes on after it
    assert started.status_code == 202, started.text
    location = started.headers["location"]

    faulty_s3.fail(mode)
    layer = os.urandom(6 * 1024 * 1024)  # more than a part: a multipart upload
    attempts: list[Callable[[], httpx.Response]] = [
        lambda: oci.push_blob(name, layer),
        lambda: oci.patch(location, layer, content_range=f"0-{len(layer) - 1}"),
        lambda: oci.get_blob(name, sha256(before)),
    ]
    for attempt in attempts:
        began = time.monotonic()
        assert_unavailable(attempt(), began)
    assert faulty_s3.faults >= 2  # it was the store that failed, and retries were made
    assert oci.head_blob(name, sha256(layer)).status_code == 404

    faulty_s3.heal()
    patched = oci.patch(location, layer, content_range=f"0-{len(layer) - 1}")
    assert patched.status_code == 202, patched.text
    assert oci.put_upload(location, sha256(layer)).status_code == 201
    assert oci.get_blob(name, sha256(layer)).content == layer
    assert oci.get_blob(name, sha256(before)).content == before
