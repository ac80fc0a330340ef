"""Browsing a managed registry: its repositories, a repository's tags, deleting a tag or a
repository (each behind a confirmation page), over the domain's BrowseService.

Repository names hold slashes, so a repository's page takes the rest of the path as its
name; the deletions name the repository and tag in the query (GET) or the form (POST), so
no repository name can ever be read as another route.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from dockyard.console.registries import notice_of
from dockyard.console.session import SignedIn
from dockyard.console.web import Caller, Console, PageRoutes, console_of
from dockyard.domain.browse import TagSummary

routes = PageRoutes()
PER_PAGE = 25
MEDIA_TYPES = {
    "application/vnd.oci.image.manifest.v1+json": "OCI image",
    "application/vnd.oci.image.index.v1+json": "OCI image index",
    "application/vnd.docker.distribution.manifest.v2+json": "Docker image",
    "application/vnd.docker.distribution.manifest.list.v2+json": "Docker manifest list",
}


def repository_url(registry_id: object, name: str) -> str:
    return f"/registries/{registry_id}/repositories/{quote(name, safe='/')}"


def short_name(name: str) -> str:
    """A repository's name without the project id every name starts with."""
    return name.partition("/")[2] or name


def _page_number(console: Console, request: Request) -> int:
    raw = request.query_params.get("page", "1")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise console.refused(request, ["page must be a whole number, 1 or more"])
    return int(raw)


def _media_type(tag: TagSummary) -> str:
    if tag.media_type is None:
        return "—"
    return MEDIA_TYPES.get(tag.media_type, tag.media_type)


def _pages(total: int) -> int:
    return max(1, -(-total // PER_PAGE))


@routes.get("/registries/{registry_id}/repositories")
async def repositories(registry_id: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    page = _page_number(console, request)
    listing = await console.read(
        request, console.services.browse.repositories_in, me.project_id, registry_id, page, PER_PAGE
    )
    return console.render(
        request,
        "repositories.html",
        notice=notice_of(request),
        listing=listing,
        short_name=short_name,
        repository_url=repository_url,
        pages=_pages(listing.total),
        base=f"/registries/{registry_id}/repositories",
    )


@routes.get("/registries/{registry_id}/repositories/{name:path}")
async def tags(registry_id: str, name: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    page = _page_number(console, request)
    listing = await console.read(
        request, console.services.browse.tags_in, me.project_id, registry_id, name, page, PER_PAGE
    )
    repository = listing.repository.name
    return console.render(
        request,
        "tags.html",
        listing=listing,
        short_name=short_name,
        media_type=_media_type,
        pages=_pages(listing.total),
        base=repository_url(registry_id, repository),
        notice=notice_of(request),
        repository_query=urlencode({"repository": repository}),
        tag_query=lambda tag: urlencode({"repository": repository, "tag": tag}),
    )


def _named(request: Request, fields: dict[str, str], *keys: str) -> list[str]:
    """The repository (and tag) a deletion names, from the query or the form."""
    values = [fields.get(key, "") for key in keys]
    if not all(values):
        console = console_of(request)
        raise console.refused(request, [f"Say which {' and '.join(keys)} to delete"])
    return values


async def _confirm(
    request: Request,
    me: SignedIn,
    registry_id: str,
    name: str,
    template: str,
    tag: str | None = None,
) -> Response:
    """The page that asks before deleting a tag of the repository, or the repository."""
    console = console_of(request)
    repository = await console.read(
        request, console.services.browse.brief_in, me.project_id, registry_id, name, tag
    )
    return console.render(
        request,
        template,
        short_name=short_name,
        registry_id=registry_id,
        repository=repository,
        back=repository_url(registry_id, name),
        tag=tag,
    )


@routes.get("/registries/{registry_id}/delete-tag")
async def delete_tag_form(registry_id: str, request: Request, me: Caller) -> Response:
    name, tag = _named(request, dict(request.query_params), "repository", "tag")
    return await _confirm(request, me, registry_id, name, "delete_tag.html", tag=tag)


@routes.post("/registries/{registry_id}/delete-tag")
async def delete_tag(registry_id: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    form = await console.form(request, me.csrf)
    name, tag = _named(request, form, "repository", "tag")
    browse = console.services.browse
    await console.act(
        request, browse.delete_tag, me.project_id, registry_id, name, tag, console.actor(me)
    )
    return RedirectResponse(repository_url(registry_id, name) + "?notice=tag_deleted", 303)


@routes.get("/registries/{registry_id}/delete-repository")
async def delete_repository_form(registry_id: str, request: Request, me: Caller) -> Response:
    [name] = _named(request, dict(request.query_params), "repository")
    return await _confirm(request, me, registry_id, name, "delete_repository.html")


@routes.post("/registries/{registry_id}/delete-repository")
async def delete_repository(registry_id: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    form = await console.form(request, me.csrf)
    [name] = _named(request, form, "repository")
    browse = console.services.browse
    await console.act(
        request, browse.delete_repository, me.project_id, registry_id, name, console.actor(me)
    )
    return RedirectResponse(
        f"/registries/{registry_id}/repositories?notice=repository_deleted", 303
    )
