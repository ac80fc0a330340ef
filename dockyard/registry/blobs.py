"""/v2/<name>/blobs/<digest>: fetch (with Range), check and delete blobs."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from dockyard.registry.access import DELETE, PULL
from dockyard.registry.errors import RegistryError
from dockyard.registry.grammar import parse_digest
from dockyard.registry.request import repo_request
from dockyard.storage.paths import blob_key


async def get_blob(request: Request) -> Response:
    req = await repo_request(request, PULL)
    digest = parse_digest(request.path_params["digest"])
    try:
        repo = await req.repository()
    except RegistryError:
        raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest}) from None
    size = await run_in_threadpool(req.context.repositories.blob_size, repo, digest)
    store = req.context.store(req.region)
    key = blob_key(digest)
    if size is None or await store.stat(key) is None:
        raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
    headers = {
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",  # content-addressed: it never changes
    }
    path = store.local_path(key)
    if path is not None:
        # FileResponse answers Range and If-Range itself, and lets the server send the
        # file without copying it through Python (sendfile / the ASGI pathsend extension).
        return FileResponse(path, media_type="application/octet-stream", headers=headers)
    headers["Content-Length"] = str(size)
    if request.method == "HEAD":
        return Response(headers=headers, media_type="application/octet-stream")
    return StreamingResponse(
        store.read(key), media_type="application/octet-stream", headers=headers
    )


async def delete_blob(request: Request) -> Response:
    req = await repo_request(request, DELETE)
    digest = parse_digest(request.path_params["digest"])
    try:
        repo = await req.repository()
    except RegistryError:
        raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest}) from None
    if not await run_in_threadpool(req.context.repositories.unlink_blob, repo, digest):
        raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
    return Response(status_code=202)
