"""Paginated listings: /v2/<name>/tags/list and /v2/_catalog, and /v2/<name>/referrers."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.domain.manifest_format import MEDIA_TYPE_RE
from dockyard.domain.manifests import referrers_index
from dockyard.domain.repositories import RepoRef
from dockyard.registry.access import PULL, authenticate, challenge
from dockyard.registry.context import get_context
from dockyard.registry.errors import RegistryError
from dockyard.registry.grammar import parse_digest
from dockyard.registry.request import repo_request

CATALOG_SCOPE = "registry:catalog:*"


def _page(request: Request, max_page: int) -> tuple[int, str | None]:
    n = request.query_params.get("n")
    # Names and tags never hold NUL (which PostgreSQL cannot compare): for them, being
    # after "a<NUL>..." is exactly being after "a".
    last = request.query_params.get("last", "").partition("\x00")[0] or None
    if n is None or n == "":
        return max_page, last
    # isdigit() alone takes "²" (int() then fails) and digits of other scripts; int() of
    # thousands of digits fails too. Anything longer than the limit is the limit.
    if not (n.isascii() and n.isdigit()):
        raise RegistryError("PAGINATION_NUMBER_INVALID", "n must be a non-negative integer")
    digits = n.lstrip("0") or "0"
    if len(digits) > len(str(max_page)):
        return max_page, last
    return min(int(digits), max_page), last


def _listing(
    path: str, key: str, extra: dict[str, str], items: list[str], more: bool, limit: int
) -> Response:
    headers = {}
    if more and items:
        query = urlencode({"n": limit, "last": items[-1]})
        headers["Link"] = f'<{path}?{query}>; rel="next"'
    return JSONResponse({**extra, key: items}, headers=headers)


async def list_tags(request: Request) -> Response:
    req = await repo_request(request, PULL)
    limit, last = _page(request, req.context.settings.max_page_size)
    repo = await req.repository()
    tags, more = await run_in_threadpool(req.context.repositories.tags, repo, limit, last)
    return _listing(f"{req.base}/tags/list", "tags", {"name": req.name.full}, tags, more, limit)


async def catalog(request: Request) -> Response:
    context = get_context(request)
    region = context.region(request)
    claims = await authenticate(context, request, region, CATALOG_SCOPE)
    if not claims.allows("registry", "catalog", "*"):
        raise challenge(context, request, region, CATALOG_SCOPE, "insufficient_scope")
    robot = await run_in_threadpool(context.robots.find, claims.robot_id, claims.secret_id)
    if robot is None:
        raise challenge(context, request, region, CATALOG_SCOPE, "invalid_token")
    limit, last = _page(request, context.settings.max_page_size)
    names, more = await run_in_threadpool(
        context.repositories.catalog, robot.project_id, region.region_id, limit, last
    )
    return _listing("/v2/_catalog", "repositories", {}, names, more, limit)


async def list_referrers(request: Request) -> Response:
    req = await repo_request(request, PULL)
    digest = parse_digest(request.path_params["digest"])
    artifact_type = request.query_params.get("artifactType") or None
    try:
        repo: RepoRef | None = await req.repository()
    except RegistryError:
        repo = None
    # Every stored artifact type is a media type (and PostgreSQL cannot compare NUL).
    if repo is None or (artifact_type and not MEDIA_TYPE_RE.match(artifact_type)):
        descriptors = []
    else:
        descriptors = await run_in_threadpool(
            req.context.manifests.referrers, repo, digest, artifact_type
        )
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    return JSONResponse(
        referrers_index(descriptors),
        media_type="application/vnd.oci.image.index.v1+json",
        headers=headers,
    )
