"""Registry tokens: short-lived ES256 JWTs naming what a robot may do, and their checks."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dockyard.security import read_or_create_secret_file

ALGORITHM = "ES256"
KEY_FILE = "token-signing-key.pem"
ACCESS = "access"
REFRESH = "refresh"
# Tokens live minutes; this many verified ones is far more than are in use at once.
VERIFIED_LIMIT = 10_000


class InvalidTokenError(Exception):
    """The token is not one of ours, not for this registry, tampered with, or expired."""


@dataclass(frozen=True)
class Grant:
    """One entry of the `access` claim."""

    type: str
    name: str
    actions: tuple[str, ...]

    def claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    robot_id: uuid.UUID
    audience: str
    grants: tuple[Grant, ...]
    # The robot's secret it was obtained with (claim `sid`): the token is good only while
    # that secret is. None in tokens issued before rotation existed.
    secret_id: str | None = None

    def allows(self, type_: str, name: str, action: str) -> bool:
        return any(
            g.type == type_ and g.name == name and (action in g.actions or "*" in g.actions)
            for g in self.grants
        )


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: datetime


class TokenService:
    def __init__(self, private_key_pem: bytes, issuer: str, lifetime_seconds: int) -> None:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("the token signing key must be an EC P-256 private key (PEM)")
        self._private = key
        self._public = key.public_key()
        self.issuer = issuer
        self.lifetime = lifetime_seconds
        # Access tokens verified before, by token and audience: the claims, nbf and exp.
        self._verified: dict[tuple[str, str], tuple[TokenClaims, float, float]] = {}

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._private, algorithm=ALGORITHM, headers={"typ": "JWT"})

    def _base(
        self,
        subject: str,
        robot_id: uuid.UUID,
        audience: str,
        lifetime: int,
        secret_id: str | None,
    ) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now - 5,  # tolerate a little clock skew between replicas
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
            "rid": str(robot_id),
        }
        if secret_id is not None:
            claims["sid"] = secret_id
        return claims

    def issue(
        self,
        subject: str,
        robot_id: uuid.UUID,
        audience: str,
        grants: list[Grant],
        secret_id: str | None = None,
    ) -> IssuedToken:
        claims = self._base(subject, robot_id, audience, self.lifetime, secret_id)
        claims["typ"] = ACCESS
        claims["access"] = [grant.claim() for grant in grants]
        return IssuedToken(
            self._sign(claims), self.lifetime, datetime.fromtimestamp(claims["iat"], UTC)
        )

    def issue_refresh(
        self,
        subject: str,
        robot_id: uuid.UUID,
        audience: str,
        lifetime: int,
        secret_id: str | None = None,
    ) -> str:
        claims = self._base(subject, robot_id, audience, lifetime, secret_id)
        claims["typ"] = REFRESH
        return self._sign(claims)

    def _decode(self, token: str, audience: str, kind: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public,
                algorithms=[ALGORITHM],  # pinned: never what the token's header says
                audience=audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "rid"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(str(exc)) from None
        if claims.get("typ") != kind:
            raise InvalidTokenError(f"not an {kind} token")
        return claims

    def verify(self, token: str, audience: str) -> TokenClaims:
        """The claims of a valid access token. A token seen valid before is not checked
        again (an ES256 verification is a tenth of a manifest GET): only its time window,
        which is all that can change about it. Whether its robot and secret are still good
        is the caller's question (RobotStanding), every time."""
        key = (token, audience)
        seen = self._verified.get(key)
        if seen is not None:
            claims, not_before, expires = seen
            if not_before <= time.time() < expires:
                return claims
            del self._verified[key]
            raise InvalidTokenError("the token has expired")
        verified, not_before, expires = self._verify(token, audience)
        if len(self._verified) >= VERIFIED_LIMIT:
            self._verified.clear()
        self._verified[key] = (verified, not_before, expires)
        return verified

    def _verify(self, token: str, audience: str) -> tuple[TokenClaims, float, float]:
        claims = self._decode(token, audience, ACCESS)
        try:
            grants = tuple(
                Grant(str(g["type"]), str(g["name"]), tuple(str(a) for a in g["actions"]))
                for g in claims.get("access") or []
            )
            robot_id = uuid.UUID(str(claims["rid"]))
            not_before, expires = float(claims["nbf"]), float(claims["exp"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidTokenError("malformed claims") from exc
        subject = str(claims["sub"])
        return (
            TokenClaims(subject, robot_id, audience, grants, _secret_id(claims)),
            not_before,
            expires,
        )

    def verify_refresh(self, token: str, audience: str) -> tuple[str, uuid.UUID, str | None]:
        """The subject, robot id and secret id (None in old tokens) of a refresh token."""
        claims = self._decode(token, audience, REFRESH)
        try:
            return str(claims["sub"]), uuid.UUID(str(claims["rid"])), _secret_id(claims)
        except ValueError as exc:
            raise InvalidTokenError("malformed claims") from exc


def _secret_id(claims: dict[str, Any]) -> str | None:
    sid = claims.get("sid")
    if sid is not None and not isinstance(sid, str):
        raise InvalidTokenError("malformed claims")
    return sid


def generate_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_or_create_signing_key(configured: str | None, data_dir: Path) -> bytes:
    """The configured PEM, else the one kept in the data dir, created (mode 0600) if absent."""
    if configured:
        return configured.encode()
    return read_or_create_secret_file(data_dir / KEY_FILE, generate_key_pem)
