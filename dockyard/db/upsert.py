"""INSERT ... ON CONFLICT DO UPDATE, in the dialect of the session's database.

Both SQLite and PostgreSQL have it. One statement instead of an ORM read, then an add or a
change, then a flush: every pushed layer makes two of these (its blob and its link).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from dockyard.db.models import Base


def upsert(
    connection: Connection,
    model: type[Base],
    values: Mapping[str, Any],
    keys: Sequence[str],
    refresh: Sequence[str],
) -> None:
    """Insert `values`; if a row with the same `keys` exists, set its `refresh` columns."""
    dialect = connection.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(model).values(**values)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: statement.excluded[name] for name in refresh},
        )
    )
