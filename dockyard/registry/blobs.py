"""/v2/<name>/blobs/<digest>: fetch (with Range), check and delete blobs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from dockyard.registry.access import DELETE, PULL
from dockyard.registry.errors import RegistryError
from dockyard.registry.grammar import parse_digest
from dockyard.registry.request import RepoRequest, repo_request
from dockyard.storage.base import StorageError
from dockyard.storage.paths import blob_key

_RANGE_SET = re.compile(r"^bytes=\s*\d*-\d*(?:\s*,\s*\d*-\d*)*\s*\Z")
# More digits than any file size has: int() of thousands of them raises, so such a Range
# is ignored, as HTTP allows, rather than failing the request.
_MAX_DIGITS = 20


def _parts(value: str) -> list[tuple[str, str]]:
    return [part.strip().partition("-")[::2] for part in value.strip()[len("bytes=") :].split(",")]


def _malformed_range(value: str | None) -> bool:
    """A Range header HTTP says to ignore (not bytes, not numbers, or start after end)."""
    if value is None:
        return False
    if not _RANGE_SET.match(value):
        return True
    for first, last in _parts(value):
        if (not first and not last) or max(len(first), len(last)) > _MAX_DIGITS:
            return True
        if first and last and int(first) > int(last):
            return True
    return False


class _WholeFileResponse(FileResponse):
    """The whole file, as if no Range had been sent (Starlette would answer 400 instead)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]
        await super().__call__({**scope, "headers": headers}, receive, send)


def _check_range(request: Request, size: int) -> None:
    """A Range with a part that starts past the end is 416 with the OCI error body (Starlette
    would answer a bare 416 for a range set); every other Range is answered (or ignored, as
    HTTP allows) by the response itself."""
    value = request.headers.get("range")
    if value is None or "if-range" in request.headers or _malformed_range(value):
        return
    for first, last in _parts(value):
        start = int(first) if first else max(size - int(last), 0)
        if not 0 <= start < size:
            raise RegistryError(
                "RANGE_INVALID",
                f"the blob has {size} bytes; the requested range is outside it",
                headers={"Content-Range": f"bytes */{size}"},
            )


def _linked_file(
    req: RepoRequest, digest: str, path: Path
) -> tuple[int | None, os.stat_result | None]:
    """The blob's size if it is linked into the repository, and its file's stat: one thread
    hop for both, and FileResponse, given the stat, needs none of its own."""
    size = req.context.repositories.blob_size_in(req.region.region_id, req.name.full, digest)
    if size is None:
        return None, None
    try:
        return size, path.stat()
    except FileNotFoundError:
        return size, None
    except OSError as exc:
        raise StorageError(f"cannot stat {digest}: {exc.strerror}") from exc


async def get_blob(request: Request) -> Response:
    req = await repo_request(request, PULL)
    digest = parse_digest(request.path_params["digest"])
    store = req.context.store(req.region)
    key = blob_key(digest)
    headers = {
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",  # content-addressed: it never changes
    }
    path = store.local_path(key)
    if path is not None:
        size, stat = await run_in_threadpool(_linked_file, req, digest, path)
        if size is None or stat is None:
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
        _check_range(request, size)
        # FileResponse answers Range and If-Range itself, and lets the server send the
        # file without copying it through Python (sendfile / the ASGI pathsend extension).
        response_class = (
            _WholeFileResponse if _malformed_range(request.headers.get("range")) else FileResponse
        )
        return response_class(
            path, media_type="application/octet-stream", headers=headers, stat_result=stat
        )
    size = await run_in_threadpool(
        req.context.repositories.blob_size_in, req.region.region_id, req.name.full, digest
    )
    if size is None or await store.stat(key) is None:
        raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
    if request.method == "GET":
        url = await store.redirect_url(key)
        if url is not None:  # the bytes go straight from the object store to the client
            return RedirectResponse(url, status_code=307, headers=headers)
    _check_range(request, size)
    headers["Content-Length"] = str(size)
    if request.method == "HEAD":
        return Response(headers=headers, media_type="application/octet-stream")
    return StreamingResponse(
        store.read(key), media_type="application/octet-stream", headers=headers
    )


async def delete_blob(request: Request) -> Response:
    req = await repo_request(request, DELETE)
    digest = parse_digest(request.path_params["digest"])
    unknown = RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
    repo = await req.repository_or(unknown)
    if not await run_in_threadpool(req.context.repositories.unlink_blob, repo, digest):
        raise unknown
    return Response(status_code=202)
