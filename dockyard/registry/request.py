"""The start of every repository request: its region, its name, and the caller's grant."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from dockyard.config import Region
from dockyard.domain.repositories import RepoRef
from dockyard.registry.access import authorize
from dockyard.registry.context import RegistryContext, get_context
from dockyard.registry.errors import RegistryError
from dockyard.registry.grammar import RepoName, parse_name
from dockyard.registry.tokens import TokenClaims

MAX_LENGTH_DIGITS = 18


@dataclass(frozen=True)
class RepoRequest:
    context: RegistryContext
    region: Region
    name: RepoName
    claims: TokenClaims

    async def repository(self) -> RepoRef:
        """The existing repository, or NAME_UNKNOWN."""
        return await run_in_threadpool(
            self.context.repositories.get, self.region.region_id, self.name.full
        )

    async def repository_or(self, missing: RegistryError) -> RepoRef:
        """The existing repository, or `missing`: what was asked for in a repository that
        does not exist is unknown itself (BLOB_UNKNOWN, MANIFEST_UNKNOWN...), not the name."""
        try:
            return await self.repository()
        except RegistryError:
            raise missing from None

    async def repository_for_push(self) -> RepoRef:
        return await run_in_threadpool(
            self.context.repositories.get_or_create,
            self.region.region_id,
            self.name.project_id,
            self.name.full,
        )

    @property
    def base(self) -> str:
        return f"/v2/{self.name.full}"


async def repo_request(request: Request, *actions: str) -> RepoRequest:
    """Parse the name, then check the token; every handler starts here."""
    context = get_context(request)
    region = context.region(request)
    name = parse_name(request.path_params["name"])
    claims = await authorize(context, request, region, name.full, *actions)
    return RepoRequest(context, region, name, claims)


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    # isascii(): "²".isdigit() is true and int() of it fails; more than 18 digits is more
    # than any disk holds, and int() of a megabyte of digits is slow on purpose (CPython).
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_LENGTH_DIGITS):
        raise RegistryError("SIZE_INVALID", "Content-Length must be a non-negative integer")
    return int(value)
