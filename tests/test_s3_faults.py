"""An S3 server that throttles: requests are retried with backoff, and what still fails is
a 503 the clients retry, never a 500 or a corrupted blob."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import anyio
import pytest

from dockyard.config import StorageSettings
from dockyard.storage.base import StorageError
from dockyard.storage.factory import build_store
from tests.oci_client import OCIClient, sha256
from tests.s3_proxy import S3Proxy, answer_error
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class ThrottlingProxy(S3Proxy):
    """Forwards to the real S3 server, answering every `every`-th request with 503 SlowDown
    instead (every=1: all of them)."""

    def __init__(self, upstream: str, every: int) -> None:
        self.every = every
        self.seen = 0
        self.throttled = 0
        self.lock = threading.Lock()
        super().__init__(upstream)

    def intercept(self, handler: BaseHTTPRequestHandler) -> bool:
        with self.lock:
            self.seen += 1
            throttle = self.seen % self.every == 0
            self.throttled += throttle
        if throttle:
            answer_error(handler, 503, SLOW_DOWN)
        return throttle


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
