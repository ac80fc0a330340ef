"""Push/pull credentials of a managed registry: generating them (optionally expiring),
rotating the password with a grace period for the old one, and revoking them. A new
password is shown once, on the answer to the POST that made it, never again."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from dockyard.console.session import SignedIn
from dockyard.console.web import Caller, PageRoutes, console_of
from dockyard.domain.audit import Actor
from dockyard.domain.credential_terms import DAY, DEFAULT_GRACE_SECONDS
from dockyard.domain.credentials import GeneratedCredentials
from dockyard.domain.registries import RegistryView
from dockyard.domain.registry_fields import MANAGED_TYPE
from dockyard.login_line import docker_login_with_password

routes = PageRoutes()
C = TypeVar("C", bound=GeneratedCredentials)

# The choices the forms offer; the domain checks whatever a hand-made form sends instead.
EXPIRY_CHOICES = (
    ("", "never"),
    (str(30 * DAY), "after 30 days"),
    (str(90 * DAY), "after 90 days"),
    (str(365 * DAY), "after 365 days"),
)
GRACE_CHOICES = (
    (0, "not at all: it stops now"),
    (3600, "for 1 hour"),
    (DAY, "for 1 day"),
    (7 * DAY, "for 7 days"),
)


def _secret_page(
    request: Request,
    me: SignedIn,
    template: str,
    view: RegistryView,
    created: GeneratedCredentials,
    **context: Any,
) -> Response:
    """The page that shows a new password, the only time it is ever shown."""
    return console_of(request).render(
        request,
        template,
        registry=view,
        created=created,
        login=docker_login_with_password(created.hostname, created.username, created.password),
        image_prefix=f"{created.hostname}/{me.project_id}/",
        **context,
    )


async def _new_password(
    request: Request,
    me: SignedIn,
    registry_id: str,
    make: Callable[[uuid.UUID, str, Mapping[str, Any], Actor], C],
    terms: Mapping[str, Any],
) -> tuple[RegistryView, C]:
    """The registry, and the credentials `make` (generate or rotate) gives it."""
    console = console_of(request)
    # Read before the write: once the password is stored, nothing may stand between it and
    # the one page that shows it (the crumbs need only the registry's id and name).
    view = await console.call(request, console.services.registries.get, me.project_id, registry_id)
    made = await console.act(request, make, me.project_id, registry_id, terms, console.actor(me))
    return view, made


@routes.post("/registries/{registry_id}/credentials")
async def generate_credentials(registry_id: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    form = await console.form(request, me.csrf)
    terms = {"expires_in": form.get("expires_in", "")}  # empty: never expires
    view, created = await _new_password(
        request, me, registry_id, console.services.credentials.generate, terms
    )
    return _secret_page(request, me, "credentials.html", view, created)


@routes.get("/registries/{registry_id}/credentials/rotate")
async def rotate_form(registry_id: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    view = await console.call(request, console.services.registries.get, me.project_id, registry_id)
    if view.registry_type != MANAGED_TYPE:
        raise console.refused(
            request,
            [
                f"Only {console.services.settings.platform_name} registries have a password to "
                "rotate; an external registry's credentials are changed by editing it"
            ],
        )
    if not view.has_credentials:
        raise console.refused(
            request, ["This registry has no credentials to rotate; generate them first"]
        )
    return console.render(
        request,
        "rotate.html",
        registry=view,
        grace_choices=GRACE_CHOICES,
        default_grace=DEFAULT_GRACE_SECONDS,
    )


@routes.post("/registries/{registry_id}/credentials/rotate")
async def rotate(registry_id: str, request: Request, me: Caller) -> Response:
    console = console_of(request)
    form = await console.form(request, me.csrf)
    # Only the grace period: the new password keeps the credentials' lifetime, and the
    # form's other fields (its CSRF token) are no rotation terms.
    terms = {"grace_period": form["grace_period"]} if "grace_period" in form else {}
    view, rotated = await _new_password(
        request, me, registry_id, console.services.credentials.rotate, terms
    )
    until = rotated.previous_valid_until
    stopped = until is None or until <= console.services.now()
    return _secret_page(request, me, "rotated.html", view, rotated, old_stopped=stopped)


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
    view = await console.act(
        request, console.services.credentials.revoke, me.project_id, registry_id, console.actor(me)
    )
    return RedirectResponse(f"/registries/{view.id}?notice=revoked", 303)
