"""Registry pages: the list, one registry, adding, editing and deleting an external one, and
checking an external one again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from dockyard.console.credentials import EXPIRY_CHOICES
from dockyard.console.web import Caller, PageRoutes, console_of
from dockyard.domain.errors import RefusedError
from dockyard.domain.registries import RegistryView
from dockyard.domain.registry_fields import EXTERNAL_TYPES, MANAGED_TYPE

routes = PageRoutes()
P = ParamSpec("P")

# Notices a redirect may ask for by key; never text from the URL itself.
NOTICES = {
    "created": "The registry was added.",
    "updated": "The registry was saved.",
    "deleted": "The registry was deleted.",
    "revoked": "The credentials were revoked; logins with them fail from now on.",
    "tag_deleted": "The tag was deleted.",
    "repository_deleted": "The repository was deleted; its storage is freed by the next "
    "garbage collection.",
    "checking": "A new check of the registry was started; its status shows the result.",
}
# What a status means, beside it: the API says no more than the status (no reason).
STATUS_NOTES = {
    "verifying": "Checking…",
    "authentication_failed": "The registry refused the stored username and password",
    "unreachable": "Dockyard could not reach the registry",
}
# On the registry's page: what to do about it.
STATUS_HINTS = {
    "verifying": "Dockyard is logging in to the registry as docker login would; this page "
    "reloads until the result is in.",
    "authentication_failed": "Edit the registry to store the right username and password "
    "(or access token); saving checks it again.",
    "unreachable": "Its name did not resolve, the connection failed or timed out, or it did "
    "not answer as a registry does. Check the hostname, or check again once the registry "
    "is up.",
}
TYPE_NAMES = {"docker_hub": "Docker Hub", "ghcr": "GitHub (ghcr.io)", "custom": "Custom"}


def notice_of(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("notice", ""))


def _region_name(request: Request, view: RegistryView) -> str | None:
    if view.region_id is None:
        return None
    region = console_of(request).services.settings.region_by_id(view.region_id)
    return region.name if region else None


@routes.get("/")
async def registry_list(request: Request, me: Caller) -> Response:
    console = console_of(request)
    views = await console.call(request, console.services.registries.list_all, me.project_id)
    return console.render(
        request,
        "registries.html",
        managed=[v for v in views if v.registry_type == MANAGED_TYPE],
        external=[v for v in views if v.registry_type != MANAGED_TYPE],
        type_names=TYPE_NAMES,
        notice=notice_of(request),
        checks=console.services.settings.verify_registries,
        status_notes=STATUS_NOTES,
    )


def _form_page(
    request: Request,
    *,
    values: dict[str, str],
    registry: RegistryView | None = None,
    errors: list[str] | None = None,
    status: int = 200,
) -> Response:
    # The password is never sent back into the form, not even after a refusal.
    shown = {key: values.get(key, "") for key in ("name", "registry_type", "hostname", "username")}
    return console_of(request).render(
        request,
        "registry_form.html",
        status,
        values=shown,
        registry=registry,
        types=EXTERNAL_TYPES,
        type_names=TYPE_NAMES,
        errors=errors or [],
    )


async def _saved(
    request: Request,
    notice: str,
    values: dict[str, str],
    registry: RegistryView | None,
    save: Callable[P, RegistryView],
    *args: P.args,
    **kwargs: P.kwargs,
) -> Response:
    """`save(...)` (create or update), then the registry's page; a refusal shows the form
    again, filled in with `values`, with the domain's sentences."""
    console = console_of(request)
    try:
        view = await console.call(request, save, *args, **kwargs)
    except RefusedError as refused:
        return _form_page(
            request, values=values, registry=registry, errors=refused.messages, status=400
        )
    # The check a new registry, or a new host or credentials, asked for runs in the
    # background, as on /v1.
    console.services.verifier.follow(view)
    return RedirectResponse(f"/registries/{view.id}?notice={notice}", 303)


@routes.get("/registries/new")
async def new_registry_form(request: Request, me: Caller) -> Response:
    return _form_page(request, values={"registry_type": "docker_hub"})


@routes.post("/registries/new")
async def create_registry(request: Request, me: Caller) -> Response:
    console = console_of(request)
    form = await console.form(request, me.csrf)
    fields = {
        key: form.get(key, "")
        for key in ("name", "registry_type", "hostname", "username", "password")
    }
    return await _saved(
        request,
        "created",
        fields,
        None,
        console.services.registries.create,
        me.project_id,
        fields,
        console.actor(me),
    )


# After /registries/new, which this path would match too.
@routes.get("/registries/{registry_id}")
async def registry_page(registry_id: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    view = await console.call(request, console.services.registries.get, me.project_id, registry_id)
    return console.render(
        request,
        "registry.html",
        registry=view,
        managed=view.registry_type == MANAGED_TYPE,
        region=_region_name(request, view),
        type_names=TYPE_NAMES,
        notice=notice_of(request),
        expiry_choices=EXPIRY_CHOICES,
        now=console.services.now(),
        checks=console.services.settings.verify_registries,
        status_notes=STATUS_NOTES,
        status_hints=STATUS_HINTS,
    )


async def _external(request: Request, me: Caller, registry_id: str, verb: str) -> RegistryView:
    """The external registry the page is about; a managed one gets the domain's refusal."""
    console = console_of(request)
    view = await console.call(request, console.services.registries.get, me.project_id, registry_id)
    if view.registry_type == MANAGED_TYPE:
        raise console.refused(
            request,
            [
                f"{console.services.settings.platform_name} registries are managed by the "
                f"platform and can't be {verb}; only external registries "
                "(docker_hub, ghcr, custom) can"
            ],
        )
    return view


@routes.get("/registries/{registry_id}/edit")
async def edit_registry_form(registry_id: str, request: Request, me: Caller) -> Response:
    view = await _external(request, me, registry_id, "updated")
    values = {"name": view.name, "registry_type": view.registry_type, "hostname": view.hostname}
    return _form_page(request, values=values, registry=view)


def _update_fields(form: dict[str, str]) -> dict[str, Any]:
    """A PATCH from the edit form: blank credentials keep the stored ones, unless the user
    ticked the box that removes them."""
    fields: dict[str, Any] = {"name": form.get("name", ""), "hostname": form.get("hostname", "")}
    if form.get("clear_credentials"):
        fields.update(username=None, password=None)
        return fields
    for key in ("username", "password"):
        if form.get(key):
            fields[key] = form[key]
    return fields


@routes.post("/registries/{registry_id}/edit")
async def update_registry(registry_id: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    view = await _external(request, me, registry_id, "updated")
    form = await console.form(request, me.csrf)
    return await _saved(
        request,
        "updated",
        {**form, "registry_type": view.registry_type},
        view,
        console.services.registries.update,
        me.project_id,
        registry_id,
        _update_fields(form),
        console.actor(me),
    )


@routes.get("/registries/{registry_id}/delete")
async def delete_registry_form(registry_id: str, request: Request, me: Caller) -> Response:
    view = await _external(request, me, registry_id, "deleted")
    return console_of(request).render(request, "delete_registry.html", registry=view)


@routes.post("/registries/{registry_id}/delete")
async def delete_registry(registry_id: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    await _external(request, me, registry_id, "deleted")
    await console.form(request, me.csrf)
    await console.act(
        request, console.services.registries.delete, me.project_id, registry_id, console.actor(me)
    )
    return RedirectResponse("/?notice=deleted", 303)


@routes.post("/registries/{registry_id}/verify")
async def check_again(registry_id: str, request: Request, me: Caller) -> Response:
    """The same as POST /v1/container_registries/:id/verify: the registry marked verifying,
    its check run in the background; the page shows the result."""
    console = console_of(request)
    await console.form(request, me.csrf)
    view = await console.act(
        request, console.services.registries.request_check, me.project_id, registry_id
    )
    console.services.verifier.follow(view)
    return RedirectResponse(f"/registries/{view.id}?notice=checking", 303)
