"""Who may do what on /v2: the bearer token of every request, checked in one place."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from dockyard.config import Region
from dockyard.registry.context import RegistryContext
from dockyard.registry.errors import RegistryError
from dockyard.registry.tokens import InvalidTokenError, TokenClaims

PULL, PUSH, DELETE = "pull", "push", "delete"


def challenge(
    context: RegistryContext,
    request: Request,
    region: Region,
    scope: str | None,
    error: str | None = None,
) -> RegistryError:
    parts = [f'realm="{context.realm(request)}"', f'service="{context.service(region)}"']
    if scope:
        parts.append(f'scope="{scope}"')
    if error:
        parts.append(f'error="{error}"')
    return RegistryError(
        "UNAUTHORIZED",
        "authentication required" if error != "insufficient_scope" else "insufficient scope",
        headers={"WWW-Authenticate": "Bearer " + ",".join(parts)},
    )


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(
    context: RegistryContext, request: Request, region: Region, scope: str | None
) -> TokenClaims:
    """The request's verified token, or a 401 that tells the client where to get one."""
    token = _bearer(request)
    if token is None:
        raise challenge(context, request, region, scope)
    try:
        claims = context.tokens.verify(token, audience=context.service(region))
    except InvalidTokenError:
        raise challenge(context, request, region, scope, "invalid_token") from None
    active = context.standing.known(claims.robot_id, claims.secret_id)
    if active is None:  # a worker thread only when the database must be asked
        active = await run_in_threadpool(
            context.standing.is_active, claims.robot_id, claims.secret_id
        )
    if not active:
        raise challenge(context, request, region, scope, "invalid_token")
    return claims


async def authorize(
    context: RegistryContext, request: Request, region: Region, name: str, *actions: str
) -> TokenClaims:
    """The token, if it grants every one of `actions` on repository `name`.

    A refusal looks the same whether or not the repository exists, and whatever project
    it belongs to.
    """
    scope = f"repository:{name}:{','.join(actions)}"
    claims = await authenticate(context, request, region, scope)
    if not all(claims.allows("repository", name, action) for action in actions):
        raise challenge(context, request, region, scope, "insufficient_scope")
    return claims
