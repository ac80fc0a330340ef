"""BlobStore on any S3-compatible object store (AWS S3, MinIO, R2, SeaweedFS), via boto3.

Appends are S3 multipart uploads (s3_multipart); the client's settings and the mapping of
its errors are in s3_bucket. What building a store takes is importable from here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from dockyard.storage.base import Chunks, Observer, PathNotFoundError, StoredObject
from dockyard.storage.s3_bucket import READ_CHUNK, S3Bucket, client_config, utc
from dockyard.storage.s3_multipart import BOOKKEEPING, MIN_PART, MultipartAppends

__all__ = ["MIN_PART", "S3BlobStore", "client_config"]


class S3BlobStore:
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        part_size: int = 8 * 1024 * 1024,
        redirect_seconds: int | None = None,
    ) -> None:
        self.s3 = S3Bucket(client, bucket, prefix)
        self.appends = MultipartAppends(self.s3, part_size)
        # Where the objects are, for a look at them with the client itself.
        self.client, self.bucket, self.prefix = client, bucket, self.s3.prefix
        self.redirect_seconds = redirect_seconds

    # -- reading -----------------------------------------------------------------------------

    async def stat(self, key: str) -> int | None:
        try:
            head = await self.s3.call("head_object", Key=self.s3.key(key))
        except PathNotFoundError:
            return None
        return int(head["ContentLength"])

    def local_path(self, key: str) -> Path | None:
        return None

    async def redirect_url(self, key: str) -> str | None:
        """A presigned GET, so blob bytes can bypass the server, when that is configured."""
        if self.redirect_seconds is None:
            return None
        return await self.s3.presigned_get(key, self.redirect_seconds)

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        if length == 0:
            return
        size = await self.stat(key)
        if size is None:
            raise PathNotFoundError(key)
        if offset >= size:
            return
        end = size - 1 if length is None else min(size, offset + length) - 1
        response = await self.s3.call(
            "get_object", Key=self.s3.key(key), Range=f"bytes={offset}-{end}"
        )
        body = response["Body"]
        try:
            while True:
                chunk = await self.s3.read_body(body, READ_CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def list(self, prefix: str) -> list[str]:
        items = await self.s3.objects(self.s3.under(prefix))
        return sorted(
            key
            for key in (item["Key"][len(self.prefix) :] for item in items)
            if not key.startswith(BOOKKEEPING)
        )

    async def scan(self, prefix: str) -> Sequence[StoredObject]:
        found: dict[str, StoredObject] = {}
        for item in await self.s3.objects(self.s3.under(prefix)):
            key = item["Key"][len(self.prefix) :]
            if not key.startswith(BOOKKEEPING):
                found[key] = StoredObject(key, int(item["Size"]), utc(item["LastModified"]))
        # An unsealed append shows as its bookkeeping and its multipart upload, not as an
        # object.
        for written, modified in (await self.appends.unsealed(prefix)).items():
            if written not in found:
                size = await self.appends.size(written)
                found[written] = StoredObject(written, size, modified)
        return sorted(found.values(), key=lambda stored: stored.key)

    # -- writing -----------------------------------------------------------------------------

    async def append(self, key: str, offset: int, chunks: Chunks, observe: Observer = None) -> int:
        return await self.appends.append(key, offset, chunks, observe)

    async def seal(self, key: str) -> None:
        """Finish writing `key`; afterwards it reads like any object."""
        await self.appends.seal(key)

    async def move(self, source: str, destination: str) -> None:
        await self.seal(source)
        await self.s3.copy(source, destination)
        await self.s3.call("delete_object", Key=self.s3.key(source))

    async def delete(self, key: str) -> None:
        await self.appends.discard(key)
        for found in await self.list(key):
            await self.s3.call("delete_object", Key=self.s3.key(found))
        await self.s3.call("delete_object", Key=self.s3.key(key))
