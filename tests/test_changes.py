"""The ChangeFeed of each database: a version that moves with every commit, from anywhere."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text, update

from dockyard.db import Database
from dockyard.db.changes import (
    APPLICATION_NAME,
    WATCHED_TABLES,
    ChangeFeed,
    NoChangeFeed,
    PostgresNotify,
    change_feed_for,
)
from dockyard.db.models import Base, Project
from dockyard.domain.projects import create_project

QUIET_SECONDS = 0.2
DEADLINE_SECONDS = 10.0
POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def feed(db: Database) -> Iterator[ChangeFeed]:
    made = change_feed_for(db)
    yield made
    made.close()


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE_SECONDS} s: {what}"
        time.sleep(0.01)


def settled(feed: ChangeFeed) -> object:
    """The version once the feed has caught up: a notification, even of a commit of this
    process, arrives a little after the commit, so wait until the version stands still."""
    version = feed.version()
    quiet_since = time.monotonic()
    deadline = quiet_since + DEADLINE_SECONDS
    while time.monotonic() - quiet_since < QUIET_SECONDS:
        assert time.monotonic() < deadline, "the version never stood still"
        time.sleep(0.01)
        now = feed.version()
        if now != version:
            version, quiet_since = now, time.monotonic()
    assert version is not None, "the feed should know the version of a reachable database"
    return version


def moved_from(feed: ChangeFeed, before: object) -> None:
    """Waits for the feed to report a version other than `before` (a commit elsewhere is
    seen when its notification arrives)."""

    def moved() -> bool:
        now = feed.version()
        return now is not None and now != before

    eventually(moved, "the version moved")


def test_the_version_stands_while_nothing_commits(db: Database, feed: ChangeFeed) -> None:
    create_project(db, "Acme")
    first = settled(feed)
    with db.read() as session:
        session.execute(Project.__table__.select())
    assert feed.version() == first
    assert feed.version() == first


def test_a_commit_of_this_process_moves_the_version(db: Database, feed: ChangeFeed) -> None:
    before = settled(feed)
    create_project(db, "Acme")
    assert feed.version() != before


def test_a_rolled_back_transaction_leaves_it(db: Database, feed: ChangeFeed) -> None:
    project = create_project(db, "Acme")
    before = settled(feed)
    with pytest.raises(RuntimeError), db.write() as session:
        session.execute(update(Project).where(Project.id == project.id).values(name="Gone"))
        raise RuntimeError("abandon")
    assert feed.version() == before


def test_a_commit_of_another_process_moves_the_version(db: Database, feed: ChangeFeed) -> None:
    before = settled(feed)
    script = (
        "import sys\n"
        "from dockyard.db import Database\n"
        "from dockyard.domain.projects import create_project\n"
        "db = Database(sys.argv[1])\n"
        "create_project(db, 'From elsewhere')\n"
        "db.dispose()\n"
    )
    subprocess.run([sys.executable, "-c", script, db.url], check=True, timeout=60)
    moved_from(feed, before)


def test_after_close_nothing_is_trusted(feed: ChangeFeed) -> None:
    settled(feed)
    feed.close()
    assert feed.version() is None
    feed.close()  # twice is harmless


def test_a_private_database_has_no_feed(tmp_path) -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        private = Database(url)
        feed = change_feed_for(private)
        assert isinstance(feed, NoChangeFeed)
        assert feed.version() is None
        private.dispose()
    shared = Database(f"sqlite:///{tmp_path / f'{uuid.uuid4()}.db'}")
    feed = change_feed_for(shared)
    assert feed.version() is not None
    feed.close()
    shared.dispose()


# PostgreSQL only: the listener, its connection and the triggers it depends on.


@pytest.fixture
def pg(db: Database) -> Database:
    assert not db.is_sqlite, "mark the test POSTGRES_ONLY"
    return db


def listeners(db: Database) -> list[int]:
    """The backend pids of the change feeds listening on the test's database."""
    with db.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE application_name = :name AND datname = current_database()"
                ),
                {"name": APPLICATION_NAME},
            ).scalars()
        )


@POSTGRES_ONLY
def test_postgres_gets_a_feed_that_listens(pg: Database, feed: ChangeFeed) -> None:
    assert isinstance(feed, PostgresNotify)
    assert feed.version() is not None  # the constructor waited for LISTEN
    assert len(listeners(pg)) == 1


@POSTGRES_ONLY
def test_the_watched_tables_notify_and_no_others(pg: Database) -> None:
    with pg.engine.connect() as conn:
        notifying = set(
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                    " WHERE t.tgname = 'dockyard_notify_change'"
                )
            ).scalars()
        )
    assert notifying == WATCHED_TABLES
    assert set(Base.metadata.tables) >= WATCHED_TABLES


@POSTGRES_ONLY
def test_the_feed_recovers_from_a_lost_connection(pg: Database, feed: ChangeFeed) -> None:
    before = settled(feed)
    [pid] = listeners(pg)
    with pg.engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    eventually(lambda: feed.version() != before, "the feed noticed the lost connection")
    eventually(lambda: listeners(pg) not in ([], [pid]), "the feed listened again")
    recovered = settled(feed)
    assert recovered != before  # commits made while nobody listened went unseen
    elsewhere = Database(pg.url)  # an engine the feed has no hooks in: only NOTIFY tells
    try:
        create_project(elsewhere, "After the outage")
    finally:
        elsewhere.dispose()
    moved_from(feed, recovered)


@POSTGRES_ONLY
def test_close_is_prompt_and_ends_the_listener(pg: Database) -> None:
    existing = set(threading.enumerate())
    feed = change_feed_for(pg)
    started = set(threading.enumerate()) - existing
    assert started, "the feed listens on a thread of its own"
    feed.close()  # it waits for the listener a second at most: the listener must be done
    assert not any(thread.is_alive() for thread in started)
    assert feed.version() is None
    eventually(lambda: listeners(pg) == [], "the listener's connection closed")


def test_a_database_that_is_down_gives_no_version() -> None:
    down = Database("postgresql://postgres@127.0.0.1:1/dockyard")  # nothing listens on 1
    feed = change_feed_for(down)
    assert isinstance(feed, PostgresNotify)
    assert feed.version() is None
    feed.close()
    down.dispose()
