"""Ids as they are written in paths and headers: a UUID in its one spelling."""

from __future__ import annotations

import uuid


def canonical_uuid(value: str) -> uuid.UUID | None:
    """The UUID `value` spells as ids are written (8-4-4-4-12 hex digits, either case), or
    None: uuid.UUID also takes bare hex, braces and urn: forms, and an id has one spelling."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    return parsed if str(parsed) == value.lower() else None
