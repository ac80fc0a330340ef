"""The S3 client's settings, and a store's prefix of a bucket reached through it: calls run
off the event loop, and botocore's errors come out as the store's own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from anyio import to_thread
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dockyard.storage.base import PathNotFoundError, StorageError

READ_CHUNK = 1024 * 1024
# botocore waits 60 s for a connection and 60 s for each read, and retries timeouts like any
# other error: with 10 attempts a stalled store held a request for ten minutes or more. An
# S3 answers in well under a second and keeps long operations (CompleteMultipartUpload, a
# large copy) alive with whitespace, so these only cut off a store that has stopped
# answering; a request then fails (503) after at most about max_attempts x READ_TIMEOUT.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0


def client_config(
    *,
    path_style: bool,
    max_attempts: int,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
) -> Config:
    """The botocore settings of the store's S3 client."""
    return Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if path_style else "auto"},
        # Adaptive retries back off on SlowDown / 503 instead of failing the request.
        retries={"max_attempts": max_attempts, "mode": "adaptive"},
        max_pool_connections=32,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


@contextlib.contextmanager
def _errors(what: str, key: str) -> Iterator[None]:
    """A missing object as PathNotFoundError, anything else (a timeout, a dropped connection,
    a refusal) as StorageError: a 503 the client retries."""
    try:
        yield
    except ClientError as exc:
        if _missing(exc):
            raise PathNotFoundError(key) from exc
        raise StorageError(f"S3 {what} failed: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 {what} failed: {exc}") from exc


class S3Bucket:
    """Keys are the store's ('blobs/...'); full keys are the bucket's, the prefix in front."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def key(self, key: str) -> str:
        """The full key of `key`."""
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"unsafe storage key {key!r}")
        return self.prefix + key

    def under(self, prefix: str) -> str:
        """The full key prefix of everything under `prefix` ('' is the whole store)."""
        return self.key(prefix).rstrip("/") + "/" if prefix.strip("/") else self.prefix

    async def call(self, method: str, **kwargs: Any) -> Any:
        """The client's `method` on this bucket."""
        with _errors(method, str(kwargs.get("Key", ""))):
            return await to_thread.run_sync(
                lambda: getattr(self.client, method)(Bucket=self.bucket, **kwargs)
            )

    async def read_body(self, body: Any, size: int | None = None) -> bytes:
        # A body stops arriving after its headers did (a stalled or dropped connection):
        # botocore raises then, outside call().
        try:
            data: bytes = await to_thread.run_sync(body.read, size)
        except BotoCoreError as exc:
            raise StorageError(f"S3 read failed: {exc}") from exc
        return data

    async def copy(self, source: str, destination: str) -> None:
        full_source, full_destination = self.key(source), self.key(destination)
        with _errors("copy", source):
            # boto3's managed copy switches to a multipart UploadPartCopy above its threshold,
            # so layers over 5 GiB (the limit of one CopyObject) move too.
            await to_thread.run_sync(
                lambda: self.client.copy(
                    {"Bucket": self.bucket, "Key": full_source}, self.bucket, full_destination
                )
            )

    async def presigned_get(self, key: str, seconds: int) -> str:
        full_key = self.key(key)
        url: str = await to_thread.run_sync(
            lambda: self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": full_key}, ExpiresIn=seconds
            )
        )
        return url

    async def objects(self, full_prefix: str) -> list[dict[str, Any]]:
        """Every object under `full_prefix`, as ListObjectsV2 describes it."""
        return await self._pages("list_objects_v2", "Contents", full_prefix, "list")

    async def multipart_uploads(self, full_prefix: str) -> list[dict[str, Any]]:
        """Every multipart upload begun and not yet completed or aborted under `full_prefix`."""
        return await self._pages(
            "list_multipart_uploads", "Uploads", full_prefix, "list of multipart uploads"
        )

    async def _pages(
        self, operation: str, field: str, full_prefix: str, what: str
    ) -> list[dict[str, Any]]:
        def walk() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            paginator = self.client.get_paginator(operation)
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                items.extend(page.get(field, []))
            return items

        try:
            return await to_thread.run_sync(walk)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 {what} failed: {exc}") from exc
