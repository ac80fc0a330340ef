"""The optional body of generating and rotating robot credentials, checked into sentences.

`expires_in` (generate, rotate): the lifetime in seconds of the password handed out;
`grace_period` (rotate): how long the password it replaces keeps working. Both are whole
seconds, as a JSON number or as the digits of a form field.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.domain.errors import RefusedError

DAY = 24 * 3600
DEFAULT_GRACE_SECONDS = DAY
MAX_GRACE_SECONDS = 7 * DAY
MIN_EXPIRES_IN = 60
MAX_EXPIRES_IN = 730 * DAY
ROTATE_FIELDS = ("grace_period", "expires_in")
# More digits than any bound above has: refused before int() (which refuses 4,300 digits).
_MAX_DIGITS = 12


class Lifetime(enum.Enum):
    """`expires_in` left out of a rotation: the new password gets the lifetime the
    credentials already have (none, or the last `expires_in` given)."""

    SAME = "same"


SAME_LIFETIME = Lifetime.SAME


@dataclass(frozen=True)
class RotateTerms:
    grace_seconds: int
    lifetime: int | Lifetime | None


def _seconds(value: object) -> int | None:
    """The value as whole seconds, maybe negative: a JSON integer or a form field's digits.
    None when it is no whole number; digits beyond any bound count as too many seconds."""
    if isinstance(value, bool):  # True is an int to Python, not to the client who sent it
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()):
        return None
    magnitude = int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS
    return -magnitude if text.startswith("-") else magnitude


def _expires_in(fields: Mapping[str, Any], errors: list[str]) -> int | None:
    value = fields.get("expires_in")
    if value is None or value == "":
        return None
    seconds = _seconds(value)
    if seconds is None or not MIN_EXPIRES_IN <= seconds <= MAX_EXPIRES_IN:
        errors.append(
            f"expires_in must be a whole number of seconds from {MIN_EXPIRES_IN} to "
            f"{MAX_EXPIRES_IN} ({MAX_EXPIRES_IN // DAY} days), e.g. 7776000 for 90 days; "
            "leave it out (or send null) for credentials that never expire"
        )
        return None
    return seconds


def _grace(fields: Mapping[str, Any], errors: list[str]) -> int:
    if "grace_period" not in fields:
        return DEFAULT_GRACE_SECONDS
    seconds = _seconds(fields["grace_period"])
    if seconds is None or not 0 <= seconds <= MAX_GRACE_SECONDS:
        errors.append(
            "grace_period must be a whole number of seconds from 0 to "
            f"{MAX_GRACE_SECONDS} ({MAX_GRACE_SECONDS // DAY} days): how long the old "
            "password keeps working; 0 stops it at once, and leaving it out gives "
            f"{DEFAULT_GRACE_SECONDS} (a day)"
        )
        return DEFAULT_GRACE_SECONDS
    return seconds


def parse_generate(fields: Mapping[str, Any]) -> int | None:
    """The lifetime of new credentials in seconds, None for ones that never expire.

    Other fields are ignored, as this call ignored any body before it took one."""
    errors: list[str] = []
    lifetime = _expires_in(fields, errors)
    if errors:
        raise RefusedError(*errors)
    return lifetime


def parse_rotate(fields: Mapping[str, Any]) -> RotateTerms:
    """A rotation's grace period and the new password's lifetime. Unknown fields are
    refused: a misspelt grace_period silently meaning a day would keep a leaked password
    alive that its owner meant to stop."""
    errors: list[str] = []
    unknown = sorted(str(key)[:100] for key in fields if key not in ROTATE_FIELDS)
    if unknown:
        errors.append(
            f"Unknown field {', '.join(repr(k) for k in unknown)}; rotating takes only "
            "grace_period and expires_in"
        )
    grace = _grace(fields, errors)
    lifetime: int | Lifetime | None = SAME_LIFETIME
    if "expires_in" in fields:
        lifetime = _expires_in(fields, errors)
    if errors:
        raise RefusedError(*errors)
    return RotateTerms(grace, lifetime)
