"""/v2/<name>/manifests/<reference>: push, fetch and delete manifests and tags."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dockyard.domain.manifest_format import ParsedManifest, parse_manifest
from dockyard.domain.repositories import RepoRef
from dockyard.registry.access import DELETE, PULL, PUSH
from dockyard.registry.errors import RegistryError
from dockyard.registry.grammar import TAG_RE, is_digest, parse_reference
from dockyard.registry.request import RepoRequest, content_length, repo_request


async def _read_manifest(request: Request, limit: int) -> bytes:
    declared = content_length(request)
    too_large = RegistryError(
        "MANIFEST_INVALID", f"manifest is larger than {limit} bytes", status=413
    )
    if declared is not None and declared > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _repository_for(req: RepoRequest, parsed: ParsedManifest) -> RepoRef:
    """The repository to store the manifest in. A manifest that names blobs or manifests
    can only be stored where they are, so it creates no repository: its refusal must not
    leave an empty one behind in the catalog."""
    named = sorted({d.digest for d in parsed.blobs}) + sorted({d.digest for d in parsed.manifests})
    if not named:
        return await req.repository_for_push()
    return await req.repository_or(
        RegistryError(
            "MANIFEST_BLOB_UNKNOWN",
            f"the manifest references {named[0]}, which this repository does not hold",
            detail={"digest": named[0]},
        )
    )


async def put_manifest(request: Request) -> Response:
    req = await repo_request(request, PULL, PUSH)
    reference = parse_reference(request.path_params["reference"])
    content = await _read_manifest(request, req.context.settings.max_manifest_bytes)
    parsed = await run_in_threadpool(parse_manifest, content, request.headers.get("content-type"))
    digest = parsed.digest
    if is_digest(reference):
        algorithm = reference.partition(":")[0]
        if algorithm != "sha256":
            digest = f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"
        if not hmac.compare_digest(digest, reference):
            raise RegistryError(
                "DIGEST_INVALID",
                "the manifest's content does not match the digest in the URL",
                detail={"expected": reference, "actual": digest},
            )
        # Kept, and answered, under the digest the client chose (sha512 included).
        parsed = dataclasses.replace(parsed, digest=digest)
    repo = await _repository_for(req, parsed)
    await run_in_threadpool(req.context.manifests.put, repo, reference, parsed, content)
    headers = {
        "Location": f"{req.base}/manifests/{parsed.digest}",
        "Docker-Content-Digest": parsed.digest,
    }
    if parsed.subject is not None:
        headers["OCI-Subject"] = parsed.subject.digest
    return Response(status_code=201, headers=headers)


def _unknown(reference: str) -> RegistryError:
    return RegistryError("MANIFEST_UNKNOWN", detail={"reference": reference})


def _lookup_reference(request: Request) -> str:
    """A reference to look up: a digest must be well-formed (DIGEST_INVALID), but a name
    that could never be a tag simply names no manifest (404), as clients expect."""
    reference: str = request.path_params["reference"]
    if is_digest(reference):
        return parse_reference(reference)
    if not TAG_RE.match(reference):
        raise _unknown(reference)
    return reference


async def _looked_up(request: Request, action: str) -> tuple[RepoRequest, RepoRef, str]:
    """The repository and the reference to find in it."""
    req = await repo_request(request, action)
    reference = _lookup_reference(request)
    return req, await req.repository_or(_unknown(reference)), reference


async def get_manifest(request: Request) -> Response:
    req = await repo_request(request, PULL)
    reference = _lookup_reference(request)
    manifest = await run_in_threadpool(
        req.context.manifests.get, req.region.region_id, req.name.full, reference
    )
    if manifest is None:
        raise _unknown(reference)
    headers = {
        "Docker-Content-Digest": manifest.digest,
        "ETag": f'"{manifest.digest}"',
        "Content-Length": str(len(manifest.content)),
    }
    body = b"" if request.method == "HEAD" else manifest.content
    return Response(body, media_type=manifest.media_type, headers=headers)


async def delete_manifest(request: Request) -> Response:
    req, repo, reference = await _looked_up(request, DELETE)
    if not await run_in_threadpool(req.context.manifests.delete, repo, reference):
        raise _unknown(reference)
    return Response(status_code=202)
