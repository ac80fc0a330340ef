"""Migration 0008 (rotation and expiry): down and up again, robots made before it keep
working, unchanged."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from dockyard.db import Database
from dockyard.db.engine import MIGRATIONS
from tests.rotation_support import generated, logs_in, managed_id, registry

NEW_COLUMNS = {"previous_secret_hash", "previous_valid_until", "expires_at", "lifetime_seconds"}


def migrate_to(url: str, revision: str) -> None:
    db = Database(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            if revision == "head":
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)
    finally:
        db.dispose()


def robot_columns(url: str) -> set[str]:
    db = Database(url)
    try:
        return {column["name"] for column in inspect(db.engine).get_columns("robot_accounts")}
    finally:
        db.dispose()


def test_a_robot_from_before_0008_keeps_working_without_expiry(timed, auth, database_url):
    registry_id = managed_id(timed, auth)
    robot = generated(timed, auth, registry_id)
    timed.app.state.services.db.engine.dispose()  # no pooled connection holds the table
    try:
        migrate_to(database_url, "0007")
        assert not robot_columns(database_url) & NEW_COLUMNS
    finally:
        migrate_to(database_url, "head")
    assert robot_columns(database_url) >= NEW_COLUMNS

    assert logs_in(timed, robot["username"], robot["password"])
    shown = registry(timed, auth, registry_id)
    assert shown["has_credentials"] is True
    assert "credentials_expire_at" not in shown
