"""What every console page needs: templates, the signed-in caller, forms checked for CSRF.

Pages call the domain services directly (in a worker thread), never /v1 over HTTP, and
render the domain's own sentences. A page that cannot go on raises PageExitError with the
answer to send instead (the sign-in page, a 404 page, a refusal), which install() turns
back into that answer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar

from fastapi import Depends, FastAPI, Request
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from dockyard.api.body import read_fields
from dockyard.api.callers import Asked, InvalidTokenError, caller_in
from dockyard.api.errors import ApiError
from dockyard.console.session import (
    COOKIE,
    SessionData,
    SessionSealer,
    SignedIn,
    clear_cookie,
    is_https,
    same_token,
)
from dockyard.db.models import Project
from dockyard.domain.audit import Actor
from dockyard.domain.errors import NotFoundError, RefusedError
from dockyard.security import is_user_api_key
from dockyard.services import Services
from dockyard.throttle import request_source

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger("dockyard.console")
HERE = Path(__file__).parent

# Pages load only what Dockyard serves itself (no CDN: machines may have no internet), and
# nothing inline, so an injected <script> would not run even if escaping ever failed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages show secrets (once) and a project's data: no cache may keep them.
    "Cache-Control": "no-store",
}


class PageExitError(Exception):
    """Stop the page and send `response` instead."""

    def __init__(self, response: Response) -> None:
        super().__init__("page exit")
        self.response = response


def human_size(size: int | None) -> str:
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


class Console:
    def __init__(self, services: Services, sealer: SessionSealer) -> None:
        self.services = services
        self.sealer = sealer
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=True,  # every template, whatever its name: names are user input
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["when"] = self._when
        self.templates.filters["size"] = human_size
        self.templates.globals["platform"] = services.settings.platform_name

    def _when(self, moment: datetime | None) -> str:
        if moment is None:
            return "—"
        return moment.astimezone(self.services.settings.zone).strftime("%Y-%m-%d %H:%M %Z")

    # -- answers ----------------------------------------------------------------------------

    def https(self, request: Request) -> bool:
        settings = self.services.settings
        return is_https(request, settings.trusted_proxies, settings.public_url)

    def render(
        self,
        request: Request,
        template: str,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        me: SignedIn | None = getattr(request.state, "console_user", None)
        context.setdefault("errors", [])
        context.setdefault("notice", None)
        html = self.templates.get_template(template).render(me=me, **context)
        return HTMLResponse(html, status, headers={**SECURITY_HEADERS, **(headers or {})})

    def not_found(self, request: Request) -> PageExitError:
        """The same page for a missing registry and another project's."""
        return PageExitError(self.render(request, "not_found.html", 404))

    def refused(self, request: Request, messages: list[str], status: int = 400) -> PageExitError:
        return PageExitError(self.render(request, "refused.html", status, errors=messages))

    async def call(
        self, request: Request, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """A domain call in a worker thread; a missing object becomes the 404 page."""
        try:
            return await run_in_threadpool(func, *args, **kwargs)
        except NotFoundError:
            raise self.not_found(request) from None

    async def act(
        self, request: Request, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """As call, and the domain's refusal becomes the page that says why; for pages that
        have no form of their own to show it in."""
        try:
            return await self.call(request, func, *args, **kwargs)
        except RefusedError as refused:
            raise self.refused(request, refused.messages) from None

    async def read(
        self,
        request: Request,
        read: Callable[Concatenate[Session, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """As act, for a domain read made for the caller's transaction (`..._in(session,
        ...)`), in a read transaction of its own. Not the sign-in's: a page checks what it
        was asked only once the caller is known (a stranger is sent to sign in first)."""

        def in_transaction() -> T:
            with self.services.db.read() as session:
                return read(session, *args, **kwargs)

        return await self.act(request, in_transaction)

    # -- the caller -------------------------------------------------------------------------

    def _lookup(self, token: str) -> tuple[uuid.UUID, uuid.UUID, str] | None:
        """(token id, project id, project name) of a live project API token, checked as /v1
        checks it, else None. A user API key does not sign in to the console."""
        if is_user_api_key(token):
            return None
        with self.services.db.read() as session:
            try:
                # The method only matters to user API keys' scopes.
                caller = caller_in(session, Asked(token, (), "GET"), self.services.now())
            except InvalidTokenError:
                return None
            project = session.get(Project, caller.project_id)
            if project is None:
                return None
            return caller.credential_id, project.id, project.name

    async def lookup(self, token: str) -> tuple[uuid.UUID, uuid.UUID, str] | None:
        return await run_in_threadpool(self._lookup, token)

    async def authenticate(self, request: Request) -> SignedIn:
        """The signed-in caller; otherwise the sign-in page (via a redirect) instead."""
        data: SessionData | None = self.sealer.open(request.cookies.get(COOKIE))
        found = None if data is None else await self.lookup(data.token)
        if data is None or found is None:
            # No session, an expired one, or its token was revoked since: sign in again.
            ended = COOKIE in request.cookies
            response = RedirectResponse("/sign-in?ended=1" if ended else "/sign-in", 303)
            if ended:
                clear_cookie(response, COOKIE, secure=self.https(request))
            raise PageExitError(response)
        token_id, project_id, project_name = found
        source = request_source(request, self.services.settings.trusted_proxies)
        me = SignedIn(project_id, project_name, token_id, data.csrf, source)
        request.state.console_user = me
        return me

    @staticmethod
    def actor(me: SignedIn) -> Actor:
        """Who the audit log names for a change made in the console: the token, as on /v1."""
        return Actor("api_token", str(me.token_id), me.source)

    async def form(self, request: Request, csrf: str) -> dict[str, str]:
        """The POSTed form, refused (403) unless it carries this session's CSRF token and
        came from this site; only its text fields."""
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise self.refused(request, [_CSRF_SENTENCE], 403)
        try:
            fields = await read_fields(request, self.services.settings.max_body_bytes)
        except ApiError as exc:
            raise self.refused(request, exc.messages, exc.status) from None
        if not same_token(fields.get("csrf"), csrf):
            raise self.refused(request, [_CSRF_SENTENCE], 403)
        return {key: value for key, value in fields.items() if isinstance(value, str)}


_CSRF_SENTENCE = (
    "This form did not come from this console, or its page is out of date; "
    "go back, reload the page and try again"
)


async def signed_in(request: Request) -> SignedIn:
    console: Console = request.app.state.console
    return await console.authenticate(request)


Caller = Annotated[SignedIn, Depends(signed_in)]


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


@dataclass
class PageRoutes:
    """Routes of one page module, added to the app itself (so that metrics label them by
    their template) and left out of /openapi.json."""

    routes: list[tuple[str, Callable[..., Awaitable[Response]], str]] = field(default_factory=list)

    def get(
        self, path: str
    ) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
        return self._add(path, "GET")

    def post(
        self, path: str
    ) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
        return self._add(path, "POST")

    def _add(
        self, path: str, method: str
    ) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
        def add(endpoint: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
            self.routes.append((path, endpoint, method))
            return endpoint

        return add

    def install(self, app: FastAPI) -> None:
        for path, endpoint, method in self.routes:
            app.add_api_route(
                path,
                endpoint,
                methods=[method],
                include_in_schema=False,
                response_class=HTMLResponse,
            )
