"""The check of an external registry, as the database keeps it: asked for, taken on, done.

A change that needs a check (RegistryService.create, update, request_check) sets `status`
to `verifying` and `verification_started_at` to its time, in its own transaction. A process
takes the check on by moving `verification_started_at` from that time to its own now
(`claim`, a compare-and-set: of two processes asked to start the same check, one gets it),
and writes the result only if the value is still its own (`finish`): a change that asked
for a new check in the meantime wins, and the older check's answer is dropped.

A process that dies leaves `verifying` behind. Any process finds such rows once their time
is older than a check can take (`stale`) and claims them like a fresh request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from dockyard.db.models import ContainerRegistry, utcnow
from dockyard.domain.registries import RegistryService
from dockyard.domain.registry_fields import AVAILABLE, VERIFYING

# Rows taken on per sweep; the rest wait for the next one.
STALE_BATCH = 500


@dataclass(frozen=True)
class CheckRequest:
    """A check to take on: the registry and the `verification_started_at` it was asked with."""

    registry_id: uuid.UUID
    asked_at: datetime


@dataclass(frozen=True)
class CheckTarget:
    """What one check needs, read when it was taken on. `credentials` are in clear: they
    stay in memory for the check and are never logged."""

    registry_id: uuid.UUID
    hostname: str
    credentials: tuple[str, str] | None
    claimed_at: datetime

    def __repr__(self) -> str:  # a stray log of the object must not show the password
        return f"CheckTarget({self.registry_id}, {self.hostname!r})"


def _count(result: object) -> int:
    """The rows an UPDATE matched (a CursorResult's rowcount, which Result does not type)."""
    return int(getattr(result, "rowcount", 0))


def _move(session: Session, registry_id: uuid.UUID, asked_at: datetime, **values: Any) -> bool:
    """The compare-and-set of claim and finish: `values` written only while the registry is
    verifying with the time `asked_at`; whether they were."""
    moved = session.execute(
        update(ContainerRegistry)
        .where(
            ContainerRegistry.id == registry_id,
            ContainerRegistry.status == VERIFYING,
            ContainerRegistry.verification_started_at == asked_at,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return _count(moved) == 1


def _lost(cutoff: datetime) -> tuple[ColumnElement[bool], ...]:
    """Registries verifying with a time before `cutoff`: checks taken for lost."""
    return (
        ContainerRegistry.verification_started_at < cutoff,
        ContainerRegistry.status == VERIFYING,
    )


class VerificationStore:
    def __init__(self, registries: RegistryService, clock: Callable[[], datetime] = utcnow) -> None:
        self.registries = registries
        self.db = registries.db
        self.clock = clock

    def claim(self, request: CheckRequest) -> CheckTarget | None:
        """Take the check on, or None when it is no longer this request's to do: done,
        asked for again since, taken on by another process, or the registry deleted."""
        claimed_at = self.clock()
        with self.db.write() as session:
            taken = _move(
                session,
                request.registry_id,
                request.asked_at,
                verification_started_at=claimed_at,
            )
            if not taken:
                return None
            row = session.get(ContainerRegistry, request.registry_id)
            assert row is not None  # updated just now, in this transaction
            return CheckTarget(
                row.id, row.hostname or "", self.registries.open_credentials(row), claimed_at
            )

    def finish(self, target: CheckTarget, status: str) -> bool:
        """Write the result; False when a newer request made it stale (nothing written)."""
        with self.db.write() as session:
            return _move(
                session,
                target.registry_id,
                target.claimed_at,
                status=status,
                verification_started_at=None,
            )

    def stale(self, older_than: timedelta) -> list[CheckRequest]:
        """Checks asked for or begun longer ago than any check takes: their process died."""
        cutoff = self.clock() - older_than
        with self.db.read() as session:
            rows = session.execute(
                select(ContainerRegistry.id, ContainerRegistry.verification_started_at)
                .where(*_lost(cutoff))
                .order_by(ContainerRegistry.verification_started_at)
                .limit(STALE_BATCH)
            )
            return [
                CheckRequest(registry_id, asked) for registry_id, asked in rows if asked is not None
            ]

    def release_stale(self, older_than: timedelta) -> int:
        """With checks turned off: registries left `verifying` become what unchecked ones
        are, available."""
        cutoff = self.clock() - older_than
        with self.db.write() as session:
            released = session.execute(
                update(ContainerRegistry)
                .where(*_lost(cutoff))
                .values(status=AVAILABLE, verification_started_at=None)
                .execution_options(synchronize_session=False)
            )
            return _count(released)
