"""Signing in to the console with a project API token, and signing out.

A wrong token counts toward the same per-address throttle and audit log as a wrong token on
/v1 (dockyard/throttle.py), so the sign-in form is no faster a way to guess. The token is
never logged, echoed into the page or put in a URL: it travels in the POST body, and then
only sealed inside the session cookie.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from dockyard.api.body import read_fields
from dockyard.api.errors import ApiError
from dockyard.console.session import COOKIE, SIGN_IN_COOKIE, clear_cookie, same_token, set_cookie
from dockyard.console.web import Console, PageRoutes, console_of
from dockyard.throttle import request_source

routes = PageRoutes()
log = logging.getLogger("dockyard.console")
SIGN_IN_SECONDS = 3600  # how long a shown sign-in form stays good
_NOTICES = {
    "ended": "Your session has ended (it expired, or its API token was revoked); sign in again.",
    "signed_out": "You are signed out.",
}


def _sign_in_page(
    console: Console,
    request: Request,
    status: int = 200,
    errors: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The form, with a fresh value in a cookie that the form must send back."""
    nonce = secrets.token_urlsafe(32)
    notice = next((text for key, text in _NOTICES.items() if key in request.query_params), None)
    page = console.render(
        request, "sign_in.html", status, headers, nonce=nonce, errors=errors or [], notice=notice
    )
    set_cookie(page, SIGN_IN_COOKIE, nonce, max_age=SIGN_IN_SECONDS, secure=console.https(request))
    return page


@routes.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    console = console_of(request)
    session = console.sealer.open(request.cookies.get(COOKIE))
    if session is not None and await console.lookup(session.token) is not None:
        return RedirectResponse("/", 303)
    return _sign_in_page(console, request)


@routes.post("/sign-in")
async def sign_in(request: Request) -> Response:
    console = console_of(request)
    services = console.services
    source = request_source(request, services.settings.trusted_proxies)
    block = services.throttle.blocked(source)
    if block is not None:
        sentence = (
            "Too many sign-ins with a wrong API token came from this address; "
            f"try again in {block.retry_after} seconds"
        )
        retry = {"Retry-After": str(block.retry_after)}
        return _sign_in_page(console, request, 429, [sentence], retry)
    try:
        fields = await read_fields(request, services.settings.max_body_bytes)
    except ApiError as exc:
        return _sign_in_page(console, request, exc.status, exc.messages)
    if not same_token(fields.get("nonce"), request.cookies.get(SIGN_IN_COOKIE, "")):
        sentence = (
            "This sign-in form is out of date or did not come from this console; "
            "please try again (the console needs cookies)"
        )
        return _sign_in_page(console, request, 403, [sentence])
    token = fields.get("token")
    token = token.strip() if isinstance(token, str) else ""
    if not token:
        return _sign_in_page(console, request, 400, ["Enter a project API token to sign in"])
    found = await console.lookup(token) if len(token) <= 512 else None
    if found is None:
        started = services.throttle.failure(source)
        try:
            await run_in_threadpool(
                services.audit.failed_api_token, source, token, blocked=bool(started)
            )
        except Exception:
            log.exception("could not record a failed console sign-in in the audit log")
        sentence = "That API token is not valid or has been revoked; check it and try again"
        return _sign_in_page(console, request, 401, [sentence])
    _, cookie = console.sealer.new(token)
    response = RedirectResponse("/", 303)
    secure = console.https(request)
    set_cookie(response, COOKIE, cookie, max_age=int(console.sealer.lifetime), secure=secure)
    clear_cookie(response, SIGN_IN_COOKIE, secure=secure)
    return response


@routes.post("/sign-out")
async def sign_out(request: Request) -> Response:
    console = console_of(request)
    session = console.sealer.open(request.cookies.get(COOKIE))
    if session is not None:
        # Without its CSRF token another site could sign the user out; harmless, but refused.
        await console.form(request, session.csrf)
    response = RedirectResponse("/sign-in?signed_out=1", 303)
    clear_cookie(response, COOKIE, secure=console.https(request))
    return response
