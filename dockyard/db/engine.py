"""The engine, sessions and migrations, for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x646F636B79617264 & 0x7FFFFFFFFFFFFFFF  # "dockyard"


# How long a SQLite writer waits for the lock of another before its request is a 503;
# `?timeout=<seconds>` in the URL changes it.
SQLITE_BUSY_SECONDS = 30.0
# PostgreSQL: a server that does not answer a connect is an error after this long rather
# than after the minutes of TCP's own retries (`?connect_timeout=` in the URL wins).
PG_CONNECT_SECONDS = 5


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry, *, busy_ms: int) -> None:
    # Python's sqlite3 would open transactions itself, lazily and as DEFERRED; take that
    # over so that writers can ask for BEGIN IMMEDIATE (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms:d}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A DEFERRED transaction that reads and then writes fails at once with SQLITE_BUSY when
    # another writer got there first (the busy timeout does not apply to that upgrade).
    # Writers take the write lock up front instead and wait their turn.
    # Straight to the driver: through exec_driver_sql, a BEGIN cost as much SQLAlchemy as the
    # query after it (~15% of a manifest GET).
    raw = conn.connection.driver_connection
    assert raw is not None
    statement = "BEGIN IMMEDIATE" if conn.get_execution_options().get("dockyard_write") else "BEGIN"
    try:
        raw.execute(statement)
    except sqlite3.OperationalError as exc:
        # As SQLAlchemy would have raised it: a lock held past the busy timeout is a 503.
        raise sqlalchemy_exc.OperationalError(statement, None, exc) from exc


class Database:
    """One engine and two session factories: reads, and writes that may contend."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        query = make_url(url).query
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False}
            # Opening a connection costs its PRAGMAs and a schema read. Beyond pool_size, a
            # connection is closed when returned: with the 5 of the default, 32 concurrent
            # token requests spent a quarter of their time opening and closing connections.
            if make_url(url).database not in (None, "", ":memory:"):  # a file: a QueuePool
                kwargs.update(pool_size=16, max_overflow=48)
        else:
            # Pre-ping: connections pooled before an outage are found dead at checkout and
            # replaced, so the server recovers by itself once the database is back.
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
            if "connect_timeout" not in query:
                kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_SECONDS}
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            busy = float(str(query.get("timeout", SQLITE_BUSY_SECONDS)))
            event.listen(self.engine, "connect", partial(_sqlite_pragmas, busy_ms=int(busy * 1000)))
            event.listen(self.engine, "begin", _sqlite_begin)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = self.engine.execution_options(dockyard_write=True)
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits when the block ends and rolls back on error."""
        with self._writer() as session, session.begin():
            yield session

    # Bare connections cost a third of a session (on SQLite ~120 us a read, ~130 us a write,
    # against ~220 and ~380): for the registry's statements, which are Core only and run a
    # few times for every pushed layer.

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A transaction that commits when the block ends and rolls back on error."""
        with self._write_engine.begin() as connection:
            yield connection

    def migrate(self) -> None:
        """Bring the schema to the newest revision."""
        # Imported here: a serving process never migrates, and Alembic costs ~11 MB.
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            if not self.is_sqlite:
                # Replicas starting together: one migrates, the others wait and find it done.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()
