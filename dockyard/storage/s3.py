"""BlobStore on any S3-compatible object store (AWS S3, MinIO, R2, SeaweedFS), via boto3.

Uploads are S3 multipart uploads: full parts of `part_size` bytes go up as they arrive, and
what is left at the end of a request (shorter than a part) waits in a small "tail" object
until the next request or the commit. A state object beside them records the parts, so any
process can continue an upload; the state of the previous request is kept too, so that an
append that the database never recorded can be rolled back.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anyio import to_thread
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dockyard.storage.base import (
    Chunks,
    InvalidOffsetError,
    Observer,
    PathNotFoundError,
    StorageError,
    StoredObject,
)

MIN_PART = 5 * 1024 * 1024
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


@dataclass
class _Checkpoint:
    size: int
    parts: int  # how many of the upload's parts belong to this checkpoint
    tail_key: str | None
    tail_size: int


@dataclass
class _UploadState:
    upload_id: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)  # PartNumber, ETag, Size
    current: _Checkpoint = field(default_factory=lambda: _Checkpoint(0, 0, None, 0))
    previous: _Checkpoint | None = None


def _missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


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
        if part_size < MIN_PART:
            raise ValueError("S3 parts must be at least 5 MiB")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_size = part_size
        self.redirect_seconds = redirect_seconds

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"unsafe storage key {key!r}")
        return self.prefix + key

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await to_thread.run_sync(lambda: getattr(self.client, method)(**kwargs))
        except ClientError as exc:
            if _missing(exc):
                raise PathNotFoundError(str(kwargs.get("Key", ""))) from exc
            raise StorageError(f"S3 {method} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 {method} failed: {exc}") from exc

    @staticmethod
    async def _read_body(body: Any, size: int | None = None) -> bytes:
        # A body stops arriving after its headers did (a stalled or dropped connection):
        # botocore raises then, outside _call.
        try:
            data: bytes = await to_thread.run_sync(body.read, size)
        except BotoCoreError as exc:
            raise StorageError(f"S3 read failed: {exc}") from exc
        return data

    # -- reading -----------------------------------------------------------------------------

    async def stat(self, key: str) -> int | None:
        try:
            head = await self._call("head_object", Bucket=self.bucket, Key=self._key(key))
        except PathNotFoundError:
            return None
        return int(head["ContentLength"])

    def local_path(self, key: str) -> Path | None:
        return None

    async def redirect_url(self, key: str) -> str | None:
        """A presigned GET, so blob bytes can bypass the server, when that is configured."""
        if self.redirect_seconds is None:
            return None
        url: str = await to_thread.run_sync(
            lambda: self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=self.redirect_seconds,
            )
        )
        return url

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
        response = await self._call(
            "get_object", Bucket=self.bucket, Key=self._key(key), Range=f"bytes={offset}-{end}"
        )
        body = response["Body"]
        try:
            while True:
                chunk = await self._read_body(body, READ_CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    # -- uploads -----------------------------------------------------------------------------

    def _aux(self, key: str, name: str) -> str:
        """Where an upload's bookkeeping lives: beside the data, never under its prefix."""
        return f"{self.prefix}_multipart/{self._key(key)[len(self.prefix) :]}/{name}"

    def _state_key(self, key: str) -> str:
        return self._aux(key, "state.json")

    async def _load(self, key: str) -> _UploadState:
        try:
            response = await self._call("get_object", Bucket=self.bucket, Key=self._state_key(key))
        except PathNotFoundError:
            return _UploadState()
        raw = json.loads(await self._read_body(response["Body"]))
        previous = raw.get("previous")
        return _UploadState(
            upload_id=raw["upload_id"],
            parts=raw["parts"],
            current=_Checkpoint(**raw["current"]),
            previous=_Checkpoint(**previous) if previous else None,
        )

    async def _save(self, key: str, state: _UploadState) -> None:
        body = json.dumps(asdict(state)).encode()
        await self._call("put_object", Bucket=self.bucket, Key=self._state_key(key), Body=body)

    async def _tail_bytes(self, checkpoint: _Checkpoint, upto: int) -> bytes:
        if not checkpoint.tail_key or upto == 0:
            return b""
        response = await self._call(
            "get_object", Bucket=self.bucket, Key=checkpoint.tail_key, Range=f"bytes=0-{upto - 1}"
        )
        return await self._read_body(response["Body"])

    async def append(self, key: str, offset: int, chunks: Chunks, observe: Observer = None) -> int:
        state = await self._load(key)
        base = self._checkpoint_at(key, state, offset)
        if state.upload_id is None:
            created = await self._call(
                "create_multipart_upload", Bucket=self.bucket, Key=self._key(key)
            )
            state.upload_id = created["UploadId"]
        parts = state.parts[: base.parts]
        buffer = bytearray(await self._tail_bytes(base, base.tail_size))
        size = base.size
        unobserved: list[bytes] = []
        pending = 0

        async def flush_part(data: bytes) -> None:
            parts.append(await self._upload_part(key, state, len(parts) + 1, data))

        async for chunk in chunks:
            if not chunk:
                continue
            buffer += chunk
            size += len(chunk)
            if observe is not None:
                unobserved.append(chunk)
                pending += len(chunk)
                if pending >= READ_CHUNK:
                    await to_thread.run_sync(observe, b"".join(unobserved))
                    unobserved, pending = [], 0
            while len(buffer) >= self.part_size:
                await flush_part(bytes(buffer[: self.part_size]))
                del buffer[: self.part_size]
        if observe is not None and unobserved:
            await to_thread.run_sync(observe, b"".join(unobserved))
        tail_key = None
        if buffer:
            tail_key = self._aux(key, f"tail-{size}")
            await self._call("put_object", Bucket=self.bucket, Key=tail_key, Body=bytes(buffer))
        replaced = (state.current, state.previous)
        state.previous = base
        state.parts = parts
        state.current = _Checkpoint(size, len(parts), tail_key, len(buffer))
        await self._save(key, state)
        keep = {state.current.tail_key, base.tail_key}
        for old in replaced:
            if old is not None and old.tail_key and old.tail_key not in keep:
                await self._call("delete_object", Bucket=self.bucket, Key=old.tail_key)
        return size

    @staticmethod
    def _checkpoint_at(key: str, state: _UploadState, offset: int) -> _Checkpoint:
        """Where an append at `offset` starts from: the last append, the one before it (when
        the database never recorded the last), or a cut inside the last tail."""
        current = state.current
        if offset == current.size:
            return current
        if state.previous is not None and offset == state.previous.size:
            return state.previous
        full = current.size - current.tail_size
        if full <= offset < current.size:
            return _Checkpoint(offset, current.parts, current.tail_key, offset - full)
        raise InvalidOffsetError(key, offset, current.size)

    async def _upload_part(
        self, key: str, state: _UploadState, number: int, data: bytes
    ) -> dict[str, Any]:
        response = await self._call(
            "upload_part",
            Bucket=self.bucket,
            Key=self._key(key),
            UploadId=state.upload_id,
            PartNumber=number,
            Body=data,
        )
        return {"PartNumber": number, "ETag": response["ETag"], "Size": len(data)}

    async def _complete(self, key: str, state: _UploadState) -> None:
        """Turn the upload into an ordinary object at `key` (the tail becomes the last part)."""
        checkpoint = state.current
        parts = state.parts[: checkpoint.parts]
        tail = await self._tail_bytes(checkpoint, checkpoint.tail_size)
        if not parts:
            await self._call("put_object", Bucket=self.bucket, Key=self._key(key), Body=tail)
            if state.upload_id:
                await self._call(
                    "abort_multipart_upload",
                    Bucket=self.bucket,
                    Key=self._key(key),
                    UploadId=state.upload_id,
                )
        else:
            if tail:
                parts.append(await self._upload_part(key, state, len(parts) + 1, tail))
            await self._call(
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=state.upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
                },
            )
        await self._forget_upload(key, state)

    async def _forget_upload(self, key: str, state: _UploadState) -> None:
        for checkpoint in (state.current, state.previous):
            if checkpoint is not None and checkpoint.tail_key:
                await self._call("delete_object", Bucket=self.bucket, Key=checkpoint.tail_key)
        await self._call("delete_object", Bucket=self.bucket, Key=self._state_key(key))

    async def seal(self, key: str) -> None:
        """Finish writing `key`; afterwards it reads like any object."""
        state = await self._load(key)
        if state.upload_id is not None or state.current.tail_key:
            await self._complete(key, state)

    async def move(self, source: str, destination: str) -> None:
        await self.seal(source)
        source_key, destination_key = self._key(source), self._key(destination)
        try:
            # boto3's managed copy switches to a multipart UploadPartCopy above its threshold,
            # so layers over 5 GiB (the limit of one CopyObject) move too.
            await to_thread.run_sync(
                lambda: self.client.copy(
                    {"Bucket": self.bucket, "Key": source_key}, self.bucket, destination_key
                )
            )
        except ClientError as exc:
            if _missing(exc):
                raise PathNotFoundError(source) from exc
            raise StorageError(f"S3 copy failed: {exc}") from exc
        except BotoCoreError as exc:  # a timeout, a dropped connection
            raise StorageError(f"S3 copy failed: {exc}") from exc
        await self._call("delete_object", Bucket=self.bucket, Key=source_key)

    async def delete(self, key: str) -> None:
        # Appends not yet sealed at `key` or under it (a cancelled upload's `uploads/<id>`)
        # keep a multipart upload and bookkeeping that no listing of `key/` shows: abort and
        # drop them too, or each abandoned upload would leave its parts billed forever.
        aux_prefix = self._aux(key, "")
        bookkeeping = await self._listing(aux_prefix)
        for item in bookkeeping:
            if item["Key"].endswith("/state.json"):
                written = item["Key"][len(self._aux_root) : -len("/state.json")]
                state = await self._load(written)
                if state.upload_id is not None:
                    await self._abort(self._key(written), state.upload_id)
        # One started before its first state was saved (a crash in between) has no state.
        for upload in await self._multipart_uploads(self._key(key)):
            if upload["Key"] == self._key(key) or upload["Key"].startswith(self._key(key) + "/"):
                await self._abort(upload["Key"], upload["UploadId"])
        for item in bookkeeping:
            await self._call("delete_object", Bucket=self.bucket, Key=item["Key"])
        for found in await self.list(key):
            await self._call("delete_object", Bucket=self.bucket, Key=self._key(found))
        await self._call("delete_object", Bucket=self.bucket, Key=self._key(key))

    async def _abort(self, full_key: str, upload_id: str) -> None:
        with contextlib.suppress(PathNotFoundError):
            await self._call(
                "abort_multipart_upload", Bucket=self.bucket, Key=full_key, UploadId=upload_id
            )

    @property
    def _aux_root(self) -> str:
        return f"{self.prefix}_multipart/"

    def _under(self, prefix: str) -> str:
        """The full key prefix of everything under `prefix` ('' is the whole store)."""
        return self._key(prefix).rstrip("/") + "/" if prefix.strip("/") else self.prefix

    async def _listing(self, full_prefix: str) -> list[dict[str, Any]]:
        def walk() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                items.extend(page.get("Contents", []))
            return items

        try:
            return await to_thread.run_sync(walk)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 list failed: {exc}") from exc

    async def _multipart_uploads(self, full_prefix: str) -> list[dict[str, Any]]:
        def walk() -> list[dict[str, Any]]:
            uploads: list[dict[str, Any]] = []
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                uploads.extend(page.get("Uploads", []))
            return uploads

        try:
            return await to_thread.run_sync(walk)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 list of multipart uploads failed: {exc}") from exc

    async def list(self, prefix: str) -> list[str]:
        items = await self._listing(self._under(prefix))
        return sorted(
            key
            for key in (item["Key"][len(self.prefix) :] for item in items)
            if not key.startswith("_multipart/")
        )

    async def scan(self, prefix: str) -> Sequence[StoredObject]:
        found: dict[str, StoredObject] = {}
        for item in await self._listing(self._under(prefix)):
            key = item["Key"][len(self.prefix) :]
            if not key.startswith("_multipart/"):
                found[key] = StoredObject(key, int(item["Size"]), _utc(item["LastModified"]))
        # An unsealed append shows as its bookkeeping and its multipart upload, not as an
        # object; its last change is the newest of them.
        pending: dict[str, datetime] = {}
        aux_prefix = self._aux_root + self._under(prefix)[len(self.prefix) :]
        for item in await self._listing(aux_prefix):
            written = item["Key"][len(self._aux_root) :].rpartition("/")[0]
            pending[written] = max(pending.get(written, _EPOCH), _utc(item["LastModified"]))
        for upload in await self._multipart_uploads(self._under(prefix)):
            written = upload["Key"][len(self.prefix) :]
            pending[written] = max(pending.get(written, _EPOCH), _utc(upload["Initiated"]))
        for written, modified in pending.items():
            if written not in found:
                size = (await self._load(written)).current.size
                found[written] = StoredObject(written, size, modified)
        return sorted(found.values(), key=lambda stored: stored.key)


_EPOCH = datetime.fromtimestamp(0, UTC)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)
