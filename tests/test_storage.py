"""One suite that every BlobStore implementation must pass."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from dockyard.storage import BlobStore, InvalidOffsetError
from dockyard.storage.filesystem import FilesystemBlobStore
from dockyard.storage.s3 import MIN_PART, S3BlobStore


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "filesystem":
        return FilesystemBlobStore(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    # Parts at S3's minimum, so that a few MiB already make a multipart upload.
    return S3BlobStore(
        server.client(), "dockyard-test", prefix=f"t-{uuid.uuid4().hex}", part_size=MIN_PART
    )


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _read_all(
    store: BlobStore, key: str, offset: int = 0, length: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, offset, length)])


def run(coro_fn: Callable[[], object]) -> None:
    anyio.run(coro_fn)  # type: ignore[arg-type]


def test_stat_of_nothing_is_none(store: BlobStore) -> None:
    async def main() -> None:
        assert await store.stat("uploads/x/data") is None

    run(main)


def test_append_creates_and_extends(store: BlobStore) -> None:
    async def main() -> None:
        size = await store.append("uploads/a/data", 0, _chunks(b"hello ", b"wor"))
        assert size == 9
        size = await store.append("uploads/a/data", 9, _chunks(b"ld"))
        assert size == 11
        await store.seal("uploads/a/data")
        assert await store.stat("uploads/a/data") == 11
        assert await _read_all(store, "uploads/a/data") == b"hello world"

    run(main)


def test_append_streams_large_bodies_and_observes_every_byte(store: BlobStore) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    seen = hashlib.sha256()

    async def main() -> None:
        parts = [payload[i : i + 65536] for i in range(0, len(payload), 65536)]
        size = await store.append("uploads/big/data", 0, _chunks(*parts), seen.update)
        assert size == len(payload)
        await store.seal("uploads/big/data")
        assert await _read_all(store, "uploads/big/data") == payload

    run(main)
    assert seen.hexdigest() == hashlib.sha256(payload).hexdigest()


class _GoneError(Exception):
    """The client went away in the middle of its body."""


async def _breaking(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise _GoneError


def test_a_body_that_breaks_raises_its_own_error_and_adds_nothing(store: BlobStore) -> None:
    """Several batches in, the client disconnects: the caller sees that error itself (not
    wrapped), and the next append at the old size finds nothing of the broken one."""
    head = os.urandom(1000)
    broken = [os.urandom(65536) for _ in range(40)]  # more than one write batch

    async def main() -> None:
        assert await store.append("uploads/c/data", 0, _chunks(head)) == len(head)
        with pytest.raises(_GoneError):
            await store.append("uploads/c/data", len(head), _breaking(*broken))
        size = await store.append("uploads/c/data", len(head), _chunks(b"tail"))
        assert size == len(head) + 4
        await store.seal("uploads/c/data")
        assert await _read_all(store, "uploads/c/data") == head + b"tail"

    run(main)


def test_append_past_the_end_is_refused(store: BlobStore) -> None:
    async def main() -> None:
        await store.append("uploads/b/data", 0, _chunks(b"abc"))
        with pytest.raises(InvalidOffsetError) as caught:
            await store.append("uploads/b/data", 5, _chunks(b"zz"))
        assert (caught.value.expected, caught.value.actual) == (5, 3)
        await store.seal("uploads/b/data")
        assert await _read_all(store, "uploads/b/data") == b"abc"

    run(main)


def test_append_at_an_earlier_offset_drops_what_followed(store: BlobStore) -> None:
    """A chunk retried after a broken attempt replaces the broken attempt's bytes."""

    async def main() -> None:
        await store.append("uploads/c/data", 0, _chunks(b"abcdef"))
        size = await store.append("uploads/c/data", 3, _chunks(b"XY"))
        assert size == 5
        await store.seal("uploads/c/data")
        assert await _read_all(store, "uploads/c/data") == b"abcXY"

    run(main)


def test_read_with_offset_and_length(store: BlobStore) -> None:
    async def main() -> None:
        await store.append("blobs/k/data", 0, _chunks(bytes(range(256)) * 10))
        await store.seal("blobs/k/data")
        assert await _read_all(store, "blobs/k/data", 10, 5) == bytes(range(10, 15))
        assert await _read_all(store, "blobs/k/data", 2555) == bytes([251, 252, 253, 254, 255])
        assert await _read_all(store, "blobs/k/data", 2560) == b""

    run(main)


def test_move_replaces_atomically_and_removes_the_source(store: BlobStore) -> None:
    async def main() -> None:
        await store.append("uploads/m/data", 0, _chunks(b"new"))
        await store.append("blobs/m/data", 0, _chunks(b"old content"))
        await store.seal("blobs/m/data")
        await store.move("uploads/m/data", "blobs/m/data")
        assert await _read_all(store, "blobs/m/data") == b"new"
        assert await store.stat("uploads/m/data") is None

    run(main)


def test_delete_a_key_a_prefix_and_nothing(store: BlobStore) -> None:
    async def main() -> None:
        for key, data in (("uploads/d/data", b"1"), ("uploads/d/extra", b"2")):
            await store.append(key, 0, _chunks(data))
            await store.seal(key)
        await store.append("uploads/d/open", 0, _chunks(b"never sealed"))
        await store.append("blobs/keep/data", 0, _chunks(b"3"))
        await store.seal("blobs/keep/data")
        await store.delete("uploads/d")
        await store.delete("uploads/never")
        assert await store.list("uploads") == []
        assert await store.list("blobs") == ["blobs/keep/data"]
        await store.delete("blobs/keep/data")
        assert await store.stat("blobs/keep/data") is None

    run(main)


def test_list_is_sorted_and_scoped_to_the_prefix(store: BlobStore) -> None:
    async def main() -> None:
        for key in ("blobs/sha256/bb/b/data", "blobs/sha256/aa/a/data", "uploads/u/data"):
            await store.append(key, 0, _chunks(b"x"))
            await store.seal(key)
        assert await store.list("blobs") == ["blobs/sha256/aa/a/data", "blobs/sha256/bb/b/data"]

    run(main)


def test_scan_shows_sizes_times_and_unsealed_appends(store: BlobStore) -> None:
    async def main() -> None:
        before = datetime.now(UTC) - timedelta(minutes=5)  # the S3 server's clock may differ
        await store.append("blobs/sha256/aa/a/data", 0, _chunks(b"sealed"))
        await store.seal("blobs/sha256/aa/a/data")
        await store.append("uploads/u/data", 0, _chunks(b"half", b" of it"))
        await store.append("other/x", 0, _chunks(b"elsewhere"))
        await store.seal("other/x")
        scanned = {o.key: o for o in await store.scan("blobs")}
        assert {k: o.size for k, o in scanned.items()} == {"blobs/sha256/aa/a/data": 6}
        (upload,) = await store.scan("uploads")
        assert (upload.key, upload.size) == ("uploads/u/data", 10)
        for stored in [*scanned.values(), upload]:
            assert before < stored.modified < datetime.now(UTC) + timedelta(minutes=5)
        assert await store.scan("nothing/here") == []

    run(main)


def test_deleting_a_prefix_removes_unsealed_appends_under_it(store: BlobStore) -> None:
    """A cancelled upload leaves nothing behind, not even the parts of a multipart upload."""
    big = os.urandom(MIN_PART + 100)  # a full part goes up on S3

    async def main() -> None:
        await store.append("uploads/e/data", 0, _chunks(big))
        await store.append("uploads/f/data", 0, _chunks(b"small"))
        await store.delete("uploads/e")
        assert [o.key for o in await store.scan("uploads")] == ["uploads/f/data"]
        await store.delete("uploads")
        assert await store.scan("uploads") == []
        if isinstance(store, S3BlobStore):
            listed = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
            assert listed.get("Uploads", []) == []
            listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
            assert listed.get("Contents", []) == []

    run(main)


@pytest.mark.parametrize("key", ["../escape", "/absolute", "blobs/../../etc/passwd"])
def test_keys_cannot_leave_the_store(store: BlobStore, key: str) -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            await store.stat(key)

    run(main)
