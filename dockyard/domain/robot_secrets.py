"""Which of a robot's secrets are good at a given moment: the rules of rotation and expiry.

A robot has at most two secrets: the current one (until `expires_at`, if set) and, after
a rotation, the previous one (until `previous_valid_until`, the end of its grace period).
Registry tokens name the secret they were obtained with by `secret_id`, so a refresh
token, or an access token's next standing check, stops when that secret stops.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from dockyard.security import carried_id

Clock = Callable[[], datetime]


class SecretColumns(Protocol):
    @property
    def secret_hash(self) -> str: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def previous_secret_hash(self) -> str | None: ...
    @property
    def previous_valid_until(self) -> datetime | None: ...


def secret_id(secret_hash: str) -> str:
    """A short public name for one secret of one robot, for tokens to carry. Derived from
    its stored hash (every secret's differs); it reveals nothing of the secret, and needs
    no column of its own. A digest that replaced an argon2 hash keeps that hash's name, so
    the tokens obtained before the upgrade stay good."""
    return carried_id(secret_hash) or hashlib.sha256(secret_hash.encode()).hexdigest()[:16]


def current_good(row: SecretColumns, now: datetime) -> bool:
    return row.expires_at is None or now < row.expires_at


def previous_good(row: SecretColumns, now: datetime) -> bool:
    return (
        row.previous_secret_hash is not None
        and row.previous_valid_until is not None
        and now < row.previous_valid_until
    )


def holds(row: SecretColumns, secret: str | None, now: datetime) -> bool:
    """Whether a token naming `secret` (a secret_id) is still backed by a good secret.

    A token naming none was issued before rotation existed, with the secret that was
    current then: it is good while that is still the current one, that is while the robot
    was never rotated (a rotated robot keeps its previous_secret_hash for good).
    """
    if secret is None:
        return row.previous_secret_hash is None and current_good(row, now)
    if secret == secret_id(row.secret_hash):
        return current_good(row, now)
    if row.previous_secret_hash is not None and secret == secret_id(row.previous_secret_hash):
        return previous_good(row, now)
    return False
