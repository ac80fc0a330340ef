"""change notify: commits to the management API's tables wake the PostgreSQL change feed

Revision ID: 0004
Revises: 0003

The feed (dockyard.db.changes.PostgresNotify) LISTENs on `dockyard_changes`. A NOTIFY with
an identical payload is folded into one per transaction and delivered only at commit, so a
statement-level trigger costs one tiny queue entry per writing transaction, none for a
rollback. Nothing to do on SQLite: it has PRAGMA data_version.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The tables the management API reads (dockyard.db.changes.WATCHED_TABLES; a migration does
# not import the code it migrates). The registry's tables stay out: a commit that sends a
# NOTIFY takes a lock that serializes all such commits in the database, and a push commits
# for every chunk and layer. tests/test_changes.py checks the two lists agree.
TABLES = ("projects", "api_tokens", "container_registries", "robot_accounts")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION dockyard_notify_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('dockyard_changes', '');
            RETURN NULL;
        END
        $$
        """
    )
    for table in TABLES:
        op.execute(
            "CREATE TRIGGER dockyard_notify_change"
            f' AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "{table}"'
            " FOR EACH STATEMENT EXECUTE FUNCTION dockyard_notify_change()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f'DROP TRIGGER IF EXISTS dockyard_notify_change ON "{table}"')
    op.execute("DROP FUNCTION IF EXISTS dockyard_notify_change()")
