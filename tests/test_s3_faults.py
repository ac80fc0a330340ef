"""An S3 server that throttles: requests are retried with backoff, and what still fails is
a 503 the clients retry, never a 500 or a corrupted blob."""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import anyio
import pytest

from dockyard.config import StorageSettings
from dockyard.storage.base import StorageError
from dockyard.storage.factory import build_store
from tests.oci_client import OCIClient, sha256
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class ThrottlingProxy:
    """Forwards to the real S3 server, answering every `every`-th request with 503 SlowDown
    instead (every=1: all of them)."""

    def __init__(self, upstream: str, every: int) -> None:
        self.every = every
        self.seen = 0
        self.throttled = 0
        target = urlsplit(upstream)
        proxy = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with lock:
                    proxy.seen += 1
                    throttle = proxy.seen % proxy.every == 0
                    proxy.throttled += throttle
                if throttle:
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                upstream_conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                upstream_conn.putrequest(
                    self.command, self.path, skip_host=True, skip_accept_encoding=True
                )
                for key, value in self.headers.items():
                    upstream_conn.putheader(key, value)
                upstream_conn.endheaders(body or None)
                answer = upstream_conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                # A HEAD answer has no body but tells the size of the object.
                size = answer.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", size or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream_conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(request: pytest.FixtureRequest, s3_server: S3Server) -> Iterator[ThrottlingProxy]:
    throttling = ThrottlingProxy(s3_server.endpoint, getattr(request, "param", 3))
    yield throttling
    throttling.close()


def settings_for(proxy: ThrottlingProxy, **extra: object) -> StorageSettings:
    values: dict[str, object] = {
        "type": "s3",
        "bucket": "dockyard-test",
        "prefix": f"faults-{os.urandom(4).hex()}",
        "endpoint_url": proxy.endpoint,
        "region": "us-east-1",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "path_style": True,
        "part_size_mib": 5,
    }
    values.update(extra)
    return StorageSettings.model_validate(values)


async def _chunks(data: bytes) -> Iterator[bytes]:  # type: ignore[misc]
    for start in range(0, len(data), 1 << 20):
        yield data[start : start + (1 << 20)]


def test_throttled_requests_are_retried_and_the_blob_arrives_whole(tmp_path, proxy):
    store = build_store(settings_for(proxy), tmp_path, "")
    data = os.urandom(12 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()

    async def main() -> bytes:
        await store.append("uploads/u/data", 0, _chunks(data))
        await store.move("uploads/u/data", f"blobs/sha256/{digest[:2]}/{digest}/data")
        key = f"blobs/sha256/{digest[:2]}/{digest}/data"
        return b"".join([chunk async for chunk in store.read(key)])

    assert anyio.run(main) == data
    assert proxy.throttled >= 3  # the store really was throttled, and got through


@pytest.mark.parametrize("proxy", [1], indirect=True)
def test_an_s3_that_never_answers_is_a_storage_error(tmp_path, proxy):
    store = build_store(settings_for(proxy, max_attempts=2), tmp_path, "")

    async def main() -> None:
        await store.append("uploads/x/data", 0, _chunks(b"bytes"))

    with pytest.raises(StorageError):
        anyio.run(main)


@pytest.mark.parametrize("proxy", [1], indirect=True)
def test_the_registry_answers_503_when_storage_fails(make_client, auth, proxy, robot):
    client = make_client(storage=settings_for(proxy, max_attempts=2).model_dump())
    oci = OCIClient(client, robot.username, robot.password)
    answer = oci.push_blob(f"{robot.project_id}/app", b"a layer")
    assert answer.status_code == 503
    assert answer.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "Retry-After" in answer.headers
    assert oci.head_blob(f"{robot.project_id}/app", sha256(b"a layer")).status_code == 404
