"""Appends to an S3 object, which S3 cannot do: they are S3 multipart uploads.

Full parts of `part_size` bytes go up as they arrive, and what is left at the end of a
request (shorter than a part) waits in a small "tail" object until the next request or the
commit. A state object beside them records the parts, so any process can continue an upload;
the state of the previous request is kept too, so that an append that the database never
recorded can be rolled back.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from anyio import to_thread

from dockyard.storage.base import Chunks, InvalidOffsetError, Observer, PathNotFoundError
from dockyard.storage.s3_bucket import READ_CHUNK, S3Bucket, utc

MIN_PART = 5 * 1024 * 1024
# Where the bookkeeping of unsealed appends lives, under the store's prefix.
BOOKKEEPING = "_multipart/"
_EPOCH = datetime.fromtimestamp(0, UTC)


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


class MultipartAppends:
    """The appends not yet sealed of one S3BlobStore, each at the key it will be sealed at."""

    def __init__(self, s3: S3Bucket, part_size: int) -> None:
        if part_size < MIN_PART:
            raise ValueError("S3 parts must be at least 5 MiB")
        self.s3 = s3
        self.part_size = part_size
        self.root = f"{s3.prefix}{BOOKKEEPING}"

    def _aux(self, key: str, name: str) -> str:
        """Where an upload's bookkeeping lives: beside the data, never under its prefix."""
        return f"{self.root}{self.s3.key(key)[len(self.s3.prefix) :]}/{name}"

    def _state_key(self, key: str) -> str:
        return self._aux(key, "state.json")

    async def _load(self, key: str) -> _UploadState:
        try:
            response = await self.s3.call("get_object", Key=self._state_key(key))
        except PathNotFoundError:
            return _UploadState()
        raw = json.loads(await self.s3.read_body(response["Body"]))
        previous = raw.get("previous")
        return _UploadState(
            upload_id=raw["upload_id"],
            parts=raw["parts"],
            current=_Checkpoint(**raw["current"]),
            previous=_Checkpoint(**previous) if previous else None,
        )

    async def _save(self, key: str, state: _UploadState) -> None:
        body = json.dumps(asdict(state)).encode()
        await self.s3.call("put_object", Key=self._state_key(key), Body=body)

    async def _tail_bytes(self, checkpoint: _Checkpoint, upto: int) -> bytes:
        if not checkpoint.tail_key or upto == 0:
            return b""
        response = await self.s3.call(
            "get_object", Key=checkpoint.tail_key, Range=f"bytes=0-{upto - 1}"
        )
        return await self.s3.read_body(response["Body"])

    async def append(self, key: str, offset: int, chunks: Chunks, observe: Observer) -> int:
        """BlobStore.append."""
        state = await self._load(key)
        base = self._checkpoint_at(key, state, offset)
        if state.upload_id is None:
            created = await self.s3.call("create_multipart_upload", Key=self.s3.key(key))
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
            await self.s3.call("put_object", Key=tail_key, Body=bytes(buffer))
        replaced = (state.current, state.previous)
        state.previous = base
        state.parts = parts
        state.current = _Checkpoint(size, len(parts), tail_key, len(buffer))
        await self._save(key, state)
        keep = {state.current.tail_key, base.tail_key}
        for old in replaced:
            if old is not None and old.tail_key and old.tail_key not in keep:
                await self.s3.call("delete_object", Key=old.tail_key)
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
        response = await self.s3.call(
            "upload_part",
            Key=self.s3.key(key),
            UploadId=state.upload_id,
            PartNumber=number,
            Body=data,
        )
        return {"PartNumber": number, "ETag": response["ETag"], "Size": len(data)}

    async def seal(self, key: str) -> None:
        """Turn what was appended to `key`, if anything, into an ordinary object."""
        state = await self._load(key)
        if state.upload_id is not None or state.current.tail_key:
            await self._complete(key, state)

    async def _complete(self, key: str, state: _UploadState) -> None:
        """Turn the upload into an ordinary object at `key` (the tail becomes the last part)."""
        checkpoint = state.current
        parts = state.parts[: checkpoint.parts]
        tail = await self._tail_bytes(checkpoint, checkpoint.tail_size)
        if not parts:
            await self.s3.call("put_object", Key=self.s3.key(key), Body=tail)
            if state.upload_id:
                await self.s3.call(
                    "abort_multipart_upload", Key=self.s3.key(key), UploadId=state.upload_id
                )
        else:
            if tail:
                parts.append(await self._upload_part(key, state, len(parts) + 1, tail))
            await self.s3.call(
                "complete_multipart_upload",
                Key=self.s3.key(key),
                UploadId=state.upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
                },
            )
        await self._forget_upload(key, state)

    async def _forget_upload(self, key: str, state: _UploadState) -> None:
        for checkpoint in (state.current, state.previous):
            if checkpoint is not None and checkpoint.tail_key:
                await self.s3.call("delete_object", Key=checkpoint.tail_key)
        await self.s3.call("delete_object", Key=self._state_key(key))

    async def discard(self, key: str) -> None:
        """Drop the appends not yet sealed at `key` or under it (a cancelled upload's
        `uploads/<id>`): their multipart uploads and bookkeeping, which no listing of `key/`
        shows; each abandoned upload would leave its parts billed forever."""
        bookkeeping = await self.s3.objects(self._aux(key, ""))
        for item in bookkeeping:
            if item["Key"].endswith("/state.json"):
                written = item["Key"][len(self.root) : -len("/state.json")]
                state = await self._load(written)
                if state.upload_id is not None:
                    await self._abort(self.s3.key(written), state.upload_id)
        # One started before its first state was saved (a crash in between) has no state.
        full_key = self.s3.key(key)
        for upload in await self.s3.multipart_uploads(full_key):
            if upload["Key"] == full_key or upload["Key"].startswith(full_key + "/"):
                await self._abort(upload["Key"], upload["UploadId"])
        for item in bookkeeping:
            await self.s3.call("delete_object", Key=item["Key"])

    async def _abort(self, full_key: str, upload_id: str) -> None:
        with contextlib.suppress(PathNotFoundError):
            await self.s3.call("abort_multipart_upload", Key=full_key, UploadId=upload_id)

    async def unsealed(self, prefix: str) -> dict[str, datetime]:
        """Each key under `prefix` with an append not yet sealed, and the last change to it:
        the newest of its bookkeeping and its multipart upload."""
        pending: dict[str, datetime] = {}
        under = self.s3.under(prefix)
        for item in await self.s3.objects(self.root + under[len(self.s3.prefix) :]):
            written = item["Key"][len(self.root) :].rpartition("/")[0]
            pending[written] = max(pending.get(written, _EPOCH), utc(item["LastModified"]))
        for upload in await self.s3.multipart_uploads(under):
            written = upload["Key"][len(self.s3.prefix) :]
            pending[written] = max(pending.get(written, _EPOCH), utc(upload["Initiated"]))
        return pending

    async def size(self, key: str) -> int:
        """How many bytes have been appended to `key` so far."""
        return (await self._load(key)).current.size
