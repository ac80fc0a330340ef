"""Has the database changed? A cheap answer, for caches of what was read from it.

A `ChangeFeed` gives a version of the database: two equal versions mean that no
transaction committed in between, from this process or any other, to the tables cached
reads depend on (on SQLite, to any table; on PostgreSQL, to `WATCHED_TABLES`). A cache
stores the version read *before* it read the database; an entry is good while the version
is the same. `None` means the feed cannot tell right now, and nothing may be served from a
cache.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from dockyard.db.engine import Database

log = logging.getLogger("dockyard.db.changes")


class ChangeFeed(Protocol):
    def version(self) -> Hashable | None:
        """The database's current version, or None if it cannot be known."""

    def close(self) -> None: ...


class NoChangeFeed:
    """For a database whose changes cannot be seen cheaply: every read goes to it."""

    def version(self) -> Hashable | None:
        return None

    def close(self) -> None:
        pass


class SqliteDataVersion:
    """SQLite's `PRAGMA data_version` on a connection of its own, which never writes: it
    changes whenever any other connection, of this or another process, commits. Answering
    takes a few microseconds and no disk access (it reads the WAL index in shared memory),
    so it can run on the event loop."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        # Not in a transaction between calls (autocommit), or data_version would stand still.
        self._connection: sqlite3.Connection | None = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=0.05
        )

    def version(self) -> Hashable | None:
        with self._lock:
            if self._connection is None:
                return None
            try:
                row = self._connection.execute("PRAGMA data_version").fetchone()
            except sqlite3.Error:  # busy for a moment (a checkpoint); the caller reads the DB
                return None
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


CHANNEL = "dockyard_changes"  # notified by the triggers of migrations 0004 and 0009
# The management API's tables. The registry's stay out: a commit that sends a NOTIFY takes
# a lock that serializes all such commits in the database, and a push commits for every
# chunk and layer. A cache of a read that uses another table needs that table's trigger.
WATCHED_TABLES = frozenset(
    {
        "projects",
        "api_tokens",
        "container_registries",
        "robot_accounts",
        # Who a user API key reaches (migration 0009).
        "users",
        "memberships",
        "user_api_keys",
        "user_api_key_projects",
    }
)
APPLICATION_NAME = "dockyard-changes"  # the listener, as pg_stat_activity shows it
_POLL_SECONDS = 0.25  # how soon the listener notices close()
_FIRST_LISTEN_SECONDS = 2.0
_RETRY_FIRST_SECONDS = 0.1
_RETRY_MAX_SECONDS = 5.0
# A connection that dies silently (a partition, a dropped NAT entry) would leave the feed
# answering with a version that nothing moves any more: TCP keepalives find it in ~10 s.
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
# Statements that cannot change a table (nor fire its triggers): a transaction of nothing
# else leaves the version alone, so that a read does not empty the caches it fills. (A
# SELECT of a function that writes would be seen only once its notification arrives.)
_READS_ONLY = re.compile(r"\s*(?:SELECT|SHOW)\b", re.IGNORECASE)
_WROTE = "dockyard_changes.wrote"  # keys of the pooled connection's info dict
_COMMITTED = "dockyard_changes.committed"


class PostgresNotify:
    """A generation counter moved by the NOTIFYs of migration 0004's triggers, which a
    thread of its own LISTENs for on a connection of its own, and by the commits of this
    process's engine.

    A notification arrives a little after its commit. For the commits of this process that
    is not good enough (a client that wrote, then reads, must see its write), so the engine's
    own commits move the generation synchronously: once when they are about to commit, and
    again when the connection is next used or returned to the pool, which is after the
    commit: a read that began in between cannot be taken for a current one.

    Whenever the listener is not connected, commits of others go unseen: the version is
    None, and the generation moves on both losing and regaining the connection.
    """

    def __init__(self, db: Database) -> None:
        # Never logged: it holds the password.
        self._conninfo = (
            make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        # Reentrant: the pool's checkin hook may run from a garbage collection, on any
        # thread, even one that holds the lock.
        self._lock = threading.RLock()
        self._generation = 0
        self._listening = False
        self._closing = threading.Event()
        self._first_attempt = threading.Event()
        self._hooks: list[tuple[Any, str, Callable[..., None]]] = [
            (db.engine, "begin", self._on_begin),
            (db.engine, "before_cursor_execute", self._on_statement),
            (db.engine, "commit", self._on_commit),
            (db.engine, "checkin", self._on_checkin),
        ]
        for target, name, hook in self._hooks:
            event.listen(target, name, hook)
        self._thread = threading.Thread(target=self._listen, name=APPLICATION_NAME, daemon=True)
        self._thread.start()
        # A server that just started caches from its first requests; a database that is
        # down is no reason not to start.
        self._first_attempt.wait(_FIRST_LISTEN_SECONDS)

    def version(self) -> Hashable | None:
        if not self._listening or self._closing.is_set():
            return None
        return self._generation

    def close(self) -> None:
        self._closing.set()
        for target, name, hook in self._hooks:
            if event.contains(target, name, hook):
                event.remove(target, name, hook)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _bump(self) -> None:
        with self._lock:
            self._generation += 1

    def _set_listening(self, listening: bool) -> None:
        # The order makes a version read in between one that the next bump retires.
        with self._lock:
            if listening:
                self._generation += 1
                self._listening = True
            else:
                self._listening = False
                self._generation += 1

    # The engine's hooks run on every transaction and statement: flags and a counter only.

    def _on_begin(self, conn: Connection) -> None:
        if conn.info.pop(_COMMITTED, False):
            self._bump()
        conn.info.pop(_WROTE, None)

    def _on_statement(
        self,
        conn: Connection,
        _cursor: object,
        statement: str,
        _parameters: object,
        _context: object,
        _executemany: bool,
    ) -> None:
        if _READS_ONLY.match(statement) is None:
            conn.info[_WROTE] = True

    def _on_commit(self, conn: Connection) -> None:
        if conn.info.pop(_WROTE, False):
            self._bump()
            conn.info[_COMMITTED] = True

    def _on_checkin(self, _dbapi_connection: object, record: ConnectionPoolEntry | None) -> None:
        if record is not None and record.info.pop(_COMMITTED, False):
            self._bump()

    def _listen(self) -> None:
        import psycopg  # here: a server on SQLite never needs it

        delay = _RETRY_FIRST_SECONDS
        lost = False
        while not self._closing.is_set():
            connection: psycopg.Connection[Any] | None = None
            try:
                connection = psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    application_name=APPLICATION_NAME,
                    connect_timeout=5,
                    **_KEEPALIVES,
                )
                connection.execute(f"LISTEN {CHANNEL}")
                self._set_listening(True)
                self._first_attempt.set()
                if lost:
                    log.info("change feed: listening again")
                delay, lost = _RETRY_FIRST_SECONDS, False
                while not self._closing.is_set():
                    for _ in connection.notifies(timeout=_POLL_SECONDS):
                        self._bump()
            except Exception as error:
                if not self._closing.is_set() and not lost:
                    # psycopg's messages name the host and the user, never the password.
                    log.warning("change feed: no connection (%s); caches are bypassed", error)
                lost = True
            finally:
                self._set_listening(False)
                self._first_attempt.set()
                if connection is not None:
                    connection.close()
            self._closing.wait(delay)
            delay = min(delay * 2, _RETRY_MAX_SECONDS)


def change_feed_for(db: Database) -> ChangeFeed:
    parsed = make_url(db.url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or path.startswith("file:"):
            return NoChangeFeed()  # a private database: other connections see none of it
        return SqliteDataVersion(path)
    if parsed.get_backend_name() == "postgresql":
        return PostgresNotify(db)
    return NoChangeFeed()
