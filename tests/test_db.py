"""The database layer: migrations that replicas can run at the same time."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from dockyard.db import Database
from dockyard.db.models import Base


@pytest.fixture
def fresh_postgres(postgres_url: str) -> Iterator[str]:
    """An empty database of its own, not yet migrated."""
    server = make_url(Database(postgres_url).url)
    name = f"dockyard_mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_replicas_starting_together_migrate_once_without_errors(fresh_postgres: str) -> None:
    errors: list[BaseException] = []

    def migrate() -> None:
        db = Database(fresh_postgres)
        try:
            db.migrate()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    db = Database(fresh_postgres)
    tables = set(inspect(db.engine).get_table_names())
    db.dispose()
    assert {t.name for t in Base.metadata.sorted_tables} <= tables


def test_the_migrations_build_exactly_the_models_tables(database_url: str) -> None:
    """Every table, column, index and foreign key the models declare is what the migrations
    made, and nothing else: a migration and its model cannot drift apart unnoticed."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    db = Database(database_url)
    try:
        with db.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        db.dispose()
    assert differences == []
