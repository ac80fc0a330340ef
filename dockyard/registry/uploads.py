"""/v2/<name>/blobs/uploads/: start, stream, chunk, finish, cancel and mount blob uploads."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

from anyio import to_thread
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dockyard.domain.repositories import RepoRef
from dockyard.domain.uploads import UploadState, parse_upload_id
from dockyard.registry.access import PULL, PUSH
from dockyard.registry.errors import RegistryError
from dockyard.registry.grammar import parse_digest, parse_name
from dockyard.registry.request import RepoRequest, content_length, repo_request
from dockyard.storage import InvalidOffsetError, PathNotFoundError
from dockyard.storage.paths import blob_key, upload_key, upload_prefix

# A writer that dies keeps others out of its upload this long at most; a living one renews.
CLAIM_SECONDS = 60.0
_CONTENT_RANGE = re.compile(r"^(?:bytes )?(\d{1,19})-(\d{1,19})(?:/(?:\d{1,19}|\*))?\Z", re.ASCII)


def _upload_headers(req: RepoRequest, upload_id: str, size: int) -> dict[str, str]:
    return {
        "Location": f"{req.base}/blobs/uploads/{upload_id}",
        "Range": f"0-{max(size - 1, 0)}",
        "Docker-Upload-UUID": upload_id,
    }


def _blob_created(req: RepoRequest, digest: str) -> Response:
    return Response(
        status_code=201,
        headers={"Location": f"{req.base}/blobs/{digest}", "Docker-Content-Digest": digest},
    )


def _range_error(req: RepoRequest, upload: UploadState, message: str) -> RegistryError:
    return RegistryError(
        "RANGE_INVALID",
        message,
        headers=_upload_headers(req, str(upload.id), upload.size),
    )


async def _claimed_body(
    req: RepoRequest, request: Request, upload: UploadState, holder: str
) -> AsyncIterator[bytes]:
    """The request body, renewing the writer's claim while a long chunk streams in."""
    renewed = time.monotonic()
    async for chunk in request.stream():
        if not chunk:
            continue
        if time.monotonic() - renewed > CLAIM_SECONDS / 3:
            await run_in_threadpool(req.context.uploads.renew, upload, holder, CLAIM_SECONDS)
            renewed = time.monotonic()
        yield chunk


async def _append(req: RepoRequest, request: Request, upload: UploadState) -> UploadState:
    """Stream the request body onto the upload, hashing as it goes; returns the new state."""
    expected = content_length(request)
    content_range = request.headers.get("content-range")
    if content_range:
        match = _CONTENT_RANGE.match(content_range.strip())
        if not match:
            raise _range_error(req, upload, "Content-Range must be <start>-<end>")
        start, end = int(match.group(1)), int(match.group(2))
        if start != upload.size or end < start:
            raise _range_error(
                req, upload, f"chunk starts at {start}, the upload is at {upload.size}"
            )
        if expected is not None and expected != end - start + 1:
            raise _range_error(req, upload, "Content-Range and Content-Length disagree")
    context = req.context
    holder = secrets.token_hex(8)
    if not await run_in_threadpool(context.uploads.claim, upload, holder, CLAIM_SECONDS):
        raise _range_error(req, upload, "another chunk of this upload is being written")
    hasher = context.hashers.take(upload.id, upload.size)
    try:
        size = await context.store(req.region).append(
            upload_key(upload.id),
            upload.size,
            _claimed_body(req, request, upload, holder),
            hasher.update if hasher is not None else None,
        )
    except InvalidOffsetError:
        # The stored bytes are fewer than the database says: an earlier write was lost.
        await run_in_threadpool(context.uploads.release, upload, holder)
        raise _range_error(
            req, upload, "the upload's stored data is shorter than its offset"
        ) from None
    except BaseException:
        await run_in_threadpool(context.uploads.release, upload, holder)
        raise
    written = size - upload.size
    if expected is not None and written != expected:
        await run_in_threadpool(context.uploads.release, upload, holder)
        raise RegistryError(
            "SIZE_INVALID", f"received {written} bytes, Content-Length said {expected}"
        )
    if not await run_in_threadpool(context.uploads.advance, upload, size, holder):
        raise _range_error(req, upload, "another chunk of this upload arrived at the same time")
    if hasher is not None:
        context.hashers.keep(upload.id, size, hasher)
    return UploadState(upload.id, upload.repository_id, size, upload.started_at)


async def _stored_digest(req: RepoRequest, upload: UploadState, algorithm: str) -> str:
    """The digest of what is stored, from the running hash when this process saw it all."""
    hasher = req.context.hashers.take(upload.id, upload.size) if algorithm == "sha256" else None
    if hasher is None:
        hasher = hashlib.new(algorithm)
        if upload.size:
            async for chunk in req.context.store(req.region).read(upload_key(upload.id)):
                await to_thread.run_sync(hasher.update, chunk)
    return f"{algorithm}:{hasher.hexdigest()}"


async def _finish(req: RepoRequest, repo: RepoRef, upload: UploadState, digest: str) -> Response:
    """Verify and commit the upload, holding its claim so no chunk lands meanwhile."""
    context = req.context
    holder = secrets.token_hex(8)
    if not await run_in_threadpool(context.uploads.claim, upload, holder, CLAIM_SECONDS):
        raise _range_error(req, upload, "a chunk of this upload is being written")
    try:
        return await _commit(req, repo, upload, digest)
    except BaseException:
        await run_in_threadpool(context.uploads.release, upload, holder)
        raise


async def _commit(req: RepoRequest, repo: RepoRef, upload: UploadState, digest: str) -> Response:
    try:
        return await _store_blob(req, repo, upload, digest)
    except PathNotFoundError as missing:
        if not missing.key.endswith(upload_key(upload.id)):  # S3 names its full key
            raise
        # A server stopped while finishing this upload, after its bytes had moved to the
        # blob and before the session was closed: nothing is left to check or move, so the
        # session is over and the client pushes the blob afresh, as after any
        # BLOB_UPLOAD_UNKNOWN. A 503 instead would refuse every retry.
        await _cancel(req, upload)
        raise RegistryError(
            "BLOB_UPLOAD_UNKNOWN",
            "this upload's data is gone (the server stopped while finishing it); "
            "start a new upload",
            detail={"upload": str(upload.id)},
        ) from None


async def _store_blob(
    req: RepoRequest, repo: RepoRef, upload: UploadState, digest: str
) -> Response:
    context, store = req.context, req.context.store(req.region)
    await store.seal(upload_key(upload.id))
    actual = await _stored_digest(req, upload, digest.partition(":")[0])
    if not hmac.compare_digest(actual, digest):
        await _cancel(req, upload)
        raise RegistryError(
            "DIGEST_INVALID",
            "the uploaded content does not match the digest",
            detail={"expected": digest, "actual": actual},
        )
    # Row first, object second, link last: collection never deletes a fresh row's object,
    # and nobody reads a blob before its link exists.
    await run_in_threadpool(context.repositories.reserve_blob, repo.region_id, digest, upload.size)
    if await store.stat(blob_key(digest)) is None:
        await store.move(upload_key(upload.id), blob_key(digest))
    await store.delete(upload_prefix(upload.id))
    linked = await run_in_threadpool(context.repositories.link_blob, repo, digest, upload.id)
    if not linked:  # collected between reservation and link: only with a zero grace period
        raise RegistryError("UNAVAILABLE", "the blob was collected meanwhile; upload it again")
    return _blob_created(req, digest)


async def _cancel(req: RepoRequest, upload: UploadState) -> None:
    req.context.hashers.drop(upload.id)
    await req.context.store(req.region).delete(upload_prefix(upload.id))
    await run_in_threadpool(req.context.uploads.forget, upload.id)


async def _try_mount(req: RepoRequest, repo: RepoRef, digest: str, source: str) -> bool:
    """Link a blob from another repository the caller may pull from; False to upload it."""
    try:
        source_name = parse_name(source)
    except RegistryError:
        return False
    if not req.claims.allows("repository", source_name.full, PULL):
        return False
    context = req.context
    try:
        source_repo = await run_in_threadpool(
            context.repositories.get, req.region.region_id, source_name.full
        )
    except RegistryError:
        return False
    if await run_in_threadpool(context.repositories.blob_size, source_repo, digest) is None:
        return False
    return bool(await run_in_threadpool(context.repositories.link_blob, repo, digest))


async def _check_session_limit(req: RepoRequest, repo: RepoRef) -> None:
    """429 when the repository has as many open upload sessions as allowed: each holds a
    row and storage until it is finished, cancelled or expires. Counted, then started, so
    concurrent starts on several replicas may go a few over."""
    settings = req.context.settings
    limit = settings.max_uploads_per_repository
    ttl = timedelta(seconds=settings.upload_ttl_seconds)
    if await run_in_threadpool(req.context.uploads.count_open, repo, ttl) >= limit:
        raise RegistryError(
            "TOOMANYREQUESTS",
            f"this repository has {limit} unfinished uploads, the most allowed; finish or "
            "cancel one (DELETE its Location), or wait until it expires",
            detail={"max_uploads_per_repository": limit},
        )


async def start_upload(request: Request) -> Response:
    req = await repo_request(request, PULL, PUSH)
    query = request.query_params
    # Refuse a malformed ?digest= before anything is created.
    single = parse_digest(query["digest"]) if "digest" in query else None
    repo = await req.repository_for_push()
    mount = query.get("mount")
    if mount:
        # A mount that cannot be done, malformed digest included, falls back to an upload.
        try:
            digest = parse_digest(mount)
        except RegistryError:
            pass
        else:
            if await _try_mount(req, repo, digest, query.get("from", "")):
                return _blob_created(req, digest)
    await _check_session_limit(req, repo)
    upload = await run_in_threadpool(req.context.uploads.start, repo)
    if single is not None:  # monolithic: POST ?digest= with the whole blob
        async with req.context.hashers.lock(upload.id):
            upload = await _append(req, request, upload)
            return await _finish(req, repo, upload, single)
    return Response(status_code=202, headers=_upload_headers(req, str(upload.id), 0))


def _upload_id(request: Request) -> uuid.UUID:
    return parse_upload_id(request.path_params["upload_id"])


async def _upload(req: RepoRequest, upload_id: uuid.UUID) -> tuple[RepoRef, UploadState]:
    return await run_in_threadpool(
        req.context.uploads.find, req.region.region_id, req.name.full, upload_id
    )


async def upload_chunk(request: Request) -> Response:
    req = await repo_request(request, PULL, PUSH)
    upload_id = _upload_id(request)
    # Loaded once the lock is ours: a chunk that went before may have moved it on.
    async with req.context.hashers.lock(upload_id):
        _, upload = await _upload(req, upload_id)
        upload = await _append(req, request, upload)
    return Response(status_code=202, headers=_upload_headers(req, str(upload.id), upload.size))


async def finish_upload(request: Request) -> Response:
    req = await repo_request(request, PULL, PUSH)
    upload_id = _upload_id(request)
    if "digest" not in request.query_params:
        await _upload(req, upload_id)  # an unknown upload is the first thing to say
        raise RegistryError("DIGEST_INVALID", "the closing PUT needs ?digest=<digest>")
    digest = parse_digest(request.query_params["digest"])
    async with req.context.hashers.lock(upload_id):
        repo, upload = await _upload(req, upload_id)
        has_body = content_length(request) or "chunked" in request.headers.get(
            "transfer-encoding", ""
        )
        if has_body or upload.size == 0:  # an empty blob must exist in storage too
            upload = await _append(req, request, upload)
        return await _finish(req, repo, upload, digest)


async def upload_status(request: Request) -> Response:
    req = await repo_request(request, PULL, PUSH)
    _, upload = await _upload(req, _upload_id(request))
    return Response(status_code=204, headers=_upload_headers(req, str(upload.id), upload.size))


async def cancel_upload(request: Request) -> Response:
    req = await repo_request(request, PULL, PUSH)
    upload_id = _upload_id(request)
    async with req.context.hashers.lock(upload_id):
        _, upload = await _upload(req, upload_id)
        await _cancel(req, upload)
    return Response(status_code=204)
