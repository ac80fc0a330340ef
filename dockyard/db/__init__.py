"""Metadata storage: SQLAlchemy models, the engine and Alembic migrations."""

from dockyard.db.engine import Database

__all__ = ["Database"]
