"""A database that cannot answer right now is a 503 that clients retry, not a 500.

Losing the connection, a refused or timed-out connect, a full pool, a lock held past the
busy timeout, a serialization failure: the request did nothing (its transaction rolled
back) and the same request will work once the database is back, which the pool notices by
itself (pre-ping on PostgreSQL). Integrity and programming errors stay 500s: retrying
them cannot help.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = logging.getLogger("dockyard.db")

RETRY_AFTER = {"Retry-After": "2"}
V1_SENTENCE = "The database is unavailable for the moment; please try again shortly"
V2_MESSAGE = "the database is unavailable for the moment; try again"
# What the handlers are registered for; `is_unavailable` then sorts out the 500s among them.
HANDLED: tuple[type[Exception], ...] = (DBAPIError, PoolTimeoutError)


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database is out of reach or busy, rather than a bug."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def is_foreign_key_violation(exc: BaseException) -> bool:
    """Whether `exc` is a row that refers to one deleted meanwhile: on /v2, a repository
    deleted through /v1 while a push into it was under way. Every other integrity error
    the code expects (a unique key raced) is caught where it can happen."""
    if not isinstance(exc, IntegrityError):
        return False
    if getattr(exc.orig, "sqlstate", None) == "23503":  # PostgreSQL: foreign_key_violation
        return True
    return "FOREIGN KEY constraint failed" in str(exc.orig)  # SQLite


def log_unavailable(method: str, path: str, exc: BaseException) -> None:
    # One line, no traceback: during an outage every request lands here.
    reason = getattr(exc, "orig", None) or exc
    log.warning("database unavailable on %s %s: %s", method, path, str(reason).strip())
