"""/auth/token: the Docker token service. Robots trade their password for a short-lived JWT."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.config import Region
from dockyard.domain.credentials import RobotIdentity
from dockyard.registry.context import RegistryContext, get_context
from dockyard.registry.errors import RegistryError
from dockyard.registry.grammar import parse_name
from dockyard.registry.tokens import Grant, InvalidTokenError
from dockyard.throttle import Block, request_source

if TYPE_CHECKING:
    from dockyard.services import Services

ROBOT_ACTIONS = ("pull", "push", "delete")
MAX_FORM_BYTES = 16 * 1024
log = logging.getLogger("dockyard.registry")


def _refused(message: str) -> RegistryError:
    return RegistryError(
        "UNAUTHORIZED", message, headers={"WWW-Authenticate": 'Basic realm="dockyard"'}
    )


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        username, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise _refused("malformed Basic credentials") from None
    return (username, password) if sep else None


def grants_for(robot: RobotIdentity, scopes: list[str]) -> list[Grant]:
    """What the robot gets of what was asked: its own project's repositories, the catalog.

    A robot is granted everything it may do on a repository even when it asks for less;
    clients such as oras-py keep their first (pull) token for a later push.
    """
    granted: dict[tuple[str, str], Grant] = {}
    for scope in scopes:
        resource_type, _, rest = scope.partition(":")
        name, _, _actions = rest.rpartition(":")
        resource_type = resource_type.split("(")[0]
        if resource_type == "registry" and name == "catalog":
            granted[("registry", "catalog")] = Grant("registry", "catalog", ("*",))
        elif resource_type == "repository" and name:
            try:
                repo = parse_name(name)
            except RegistryError:
                continue
            if repo.project_id == robot.project_id:
                granted[("repository", name)] = Grant("repository", name, ROBOT_ACTIONS)
    return list(granted.values())


async def _read_form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise RegistryError("PAYLOAD_TOO_LARGE", "token request body is too large")
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        raise RegistryError("BLOB_UPLOAD_INVALID", "token request form must be UTF-8") from None


def _region(context: RegistryContext, request: Request, service: str | None) -> Region:
    region = context.region_for_host(service or request.headers.get("host"))
    if region is None or (service and context.service(region) != service):
        raise RegistryError("DENIED", f"unknown service {service!r}", status=400)
    return region


async def _robot_for(
    context: RegistryContext, request: Request, form: dict[str, str] | None, region: Region
) -> RobotIdentity:
    if form is not None and form.get("grant_type") == "refresh_token":
        try:
            _, robot_id, secret = context.tokens.verify_refresh(
                form.get("refresh_token", ""), context.service(region)
            )
        except InvalidTokenError:
            raise _refused("the refresh token is invalid or expired") from None
        # The password it was obtained with must still be good: not revoked, rotated out
        # (past its grace period) or expired.
        found = await run_in_threadpool(context.robots.find, robot_id, secret)
        if found is None:
            raise _refused("the credentials of this refresh token were revoked or expired")
        return found
    if form is not None:
        if form.get("grant_type") != "password":
            raise RegistryError(
                "UNSUPPORTED", "grant_type must be password or refresh_token", status=400
            )
        credentials: tuple[str, str] | None = (form.get("username", ""), form.get("password", ""))
    else:
        credentials = _basic(request)
    if credentials is None:
        raise _refused("credentials are required: log in with a robot account")
    return await _password_login(request, region, *credentials)


def _too_many(block: Block) -> RegistryError:
    whose = "from this address" if block.scope == "source" else "for this account"
    return RegistryError(
        "TOOMANYREQUESTS",
        f"too many failed logins {whose}; try again in {block.retry_after} seconds",
        headers={"Retry-After": str(block.retry_after)},
    )


async def _password_login(
    request: Request, region: Region, username: str, password: str
) -> RobotIdentity:
    """A robot's login, throttled: a blocked source or account is refused before its
    password is hashed, so guessing stays slow for them and cheap for us."""
    services: Services = request.app.state.services
    source = request_source(request, services.settings.trusted_proxies)
    block = services.throttle.blocked(source, username)
    if block is not None:
        raise _too_many(block)
    robot = None
    if "\x00" not in username:  # no robot is named so, and PostgreSQL cannot compare it
        robot = await run_in_threadpool(services.registry.robots.authenticate, username, password)
    if robot is None or robot.region_id != region.region_id:
        started = services.throttle.failure(source, username)
        try:
            await run_in_threadpool(
                services.audit.failed_robot_login, source, username, blocked=bool(started)
            )
        except Exception:
            # Refused either way; a lost event must not turn that into a 500.
            log.exception("could not record a failed login in the audit log")
        raise _refused("incorrect username or password")
    services.throttle.success(source, robot.username)
    return robot


async def token_endpoint(request: Request) -> Response:
    try:
        return await _token(request)
    except RegistryError as exc:
        return exc.response()


async def _token(request: Request) -> Response:
    context = get_context(request)
    form = await _read_form(request) if request.method == "POST" else None
    params = form if form is not None else dict(request.query_params)
    if form is not None:
        scopes = form.get("scope", "").split()
    else:
        scopes = [s for value in request.query_params.getlist("scope") for s in value.split()]
    region = _region(context, request, params.get("service"))
    robot = await _robot_for(context, request, form, region)
    issued = context.tokens.issue(
        robot.username,
        robot.id,
        context.service(region),
        grants_for(robot, scopes),
        robot.secret_id,
    )
    body: dict[str, object] = {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at.isoformat().replace("+00:00", "Z"),
    }
    wants_refresh = params.get("offline_token") == "true" or params.get("access_type") == "offline"
    if wants_refresh or (form is not None and form.get("grant_type") == "refresh_token"):
        body["refresh_token"] = context.tokens.issue_refresh(
            robot.username,
            robot.id,
            context.service(region),
            context.settings.refresh_token_lifetime_seconds,
            robot.secret_id,
        )
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
