"""Push/pull credentials of a managed registry: generating them (the password shown once on
the answer to the POST, never again) and revoking them."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from dockyard.console.web import Caller, PageRoutes, console_of
from dockyard.domain.errors import RefusedError
from dockyard.login_line import docker_login_with_password

routes = PageRoutes()


@routes.post("/registries/{registry_id}/credentials")
async def generate_credentials(registry_id: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    await console.form(request, me.csrf)
    try:
        created = await console.call(
            request,
            console.services.credentials.generate,
            me.project_id,
            registry_id,
            actor=console.actor(me),
        )
    except RefusedError as refused:
        raise console.refused(request, refused.messages) from None
    view = await console.call(request, console.services.registries.get, me.project_id, registry_id)
    return console.render(
        request,
        "credentials.html",
        registry=view,
        created=created,
        login=docker_login_with_password(created.hostname, created.username, created.password),
        image_prefix=f"{created.hostname}/{me.project_id}/",
    )


@routes.get("/registries/{registry_id}/credentials/revoke")
async def revoke_form(registry_id: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    view = await console.call(request, console.services.registries.get, me.project_id, registry_id)
    if not view.has_credentials:
        raise console.refused(request, ["This registry has no credentials to delete"])
    return console.render(request, "revoke.html", registry=view)


@routes.post("/registries/{registry_id}/credentials/revoke")
async def revoke(registry_id: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    await console.form(request, me.csrf)
    try:
        view = await console.call(
            request,
            console.services.credentials.revoke,
            me.project_id,
            registry_id,
            console.actor(me),
        )
    except RefusedError as refused:
        raise console.refused(request, refused.messages) from None
    return RedirectResponse(f"/registries/{view.id}?notice=revoked", 303)
