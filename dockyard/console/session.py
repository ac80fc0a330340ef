"""The console's sign-in: the API token kept in a sealed cookie, and the per-session CSRF token.

The cookie holds the project API token the user signed in with, encrypted and authenticated
with the server's key (AES-GCM, security.Cipher, with a context of its own), together with a
random CSRF token and an expiry. Nothing is kept on the server, so every replica can read it
and a restart signs no one out; the token is looked up on every request, so revoking it ends
every console session that uses it at once. The browser cannot read the cookie (HttpOnly),
never sends it from another site (SameSite=Strict) and, over https, never over plain http
(Secure). Signing out deletes the cookie.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response

from dockyard.security import Cipher, DecryptionError
from dockyard.throttle import IPNetwork

COOKIE = "dockyard_session"
# Before sign-in: the random value the sign-in form must echo, so that another site cannot
# sign a browser in to the attacker's project (login CSRF).
SIGN_IN_COOKIE = "dockyard_sign_in"
_CONTEXT = "dockyard-console-session"
_MAX_COOKIE_CHARS = 4096  # a browser keeps no more; anything longer is not ours


@dataclass(frozen=True)
class SessionData:
    """What the cookie holds once opened."""

    token: str
    csrf: str
    expires_at: float


@dataclass(frozen=True)
class SignedIn:
    """The signed-in caller of a console request."""

    project_id: uuid.UUID
    project_name: str
    token_id: uuid.UUID
    csrf: str
    source: str


class SessionSealer:
    """Seals session data into a cookie value and opens it again."""

    def __init__(
        self, cipher: Cipher, lifetime: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.cipher = cipher
        self.lifetime = lifetime
        self.clock = clock

    def new(self, token: str) -> tuple[SessionData, str]:
        data = SessionData(token, secrets.token_urlsafe(32), self.clock() + self.lifetime)
        return data, self.seal(data)

    def seal(self, data: SessionData) -> str:
        payload = json.dumps({"t": data.token, "c": data.csrf, "x": data.expires_at})
        return self.cipher.encrypt(payload, _CONTEXT)

    def open(self, value: str | None) -> SessionData | None:
        """The session in the cookie; None when absent, forged, altered or expired."""
        if not value or len(value) > _MAX_COOKIE_CHARS:
            return None
        try:
            payload = json.loads(self.cipher.decrypt(value, _CONTEXT))
            data = SessionData(str(payload["t"]), str(payload["c"]), float(payload["x"]))
        except (DecryptionError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None
        return data if data.expires_at > self.clock() else None


def same_token(sent: object, expected: str) -> bool:
    """A CSRF token check in constant time; anything but a non-empty string fails."""
    return (
        isinstance(sent, str)
        and bool(expected)
        and hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode())
    )


def is_https(
    connection: HTTPConnection, trusted_proxies: Sequence[IPNetwork], public_url: str | None
) -> bool:
    """Whether the browser reached us over https: directly, as the configured public URL
    says, or as a trusted proxy in front of us says (X-Forwarded-Proto)."""
    if connection.url.scheme == "https" or (public_url or "").startswith("https://"):
        return True
    peer = connection.client.host if connection.client else None
    if peer is None or not _trusted(peer, trusted_proxies):
        return False
    forwarded = connection.headers.get("x-forwarded-proto", "")
    return forwarded.split(",")[-1].strip().lower() == "https"


def _trusted(peer: str, proxies: Sequence[IPNetwork]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address.version == net.version and address in net for net in proxies)


def set_cookie(response: Response, name: str, value: str, *, max_age: int, secure: bool) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, name: str, *, secure: bool) -> None:
    response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="strict")
