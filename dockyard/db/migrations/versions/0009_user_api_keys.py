"""user API keys: users, their project memberships, and their API keys with an allow-list

Revision ID: 0009
Revises: 0008

A user API key reaches every project its user is a member of (those of its allow-list, if
it has one), chosen per request by the X-Nodion-Project header. Each of these tables
decides who may read what through /v1, so each wakes PostgreSQL's change feed (0004): a
removed membership or a revoked key must empty every replica's cached reads at once.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Added to dockyard.db.changes.WATCHED_TABLES (tests/test_changes.py checks they agree).
TABLES = ("users", "memberships", "user_api_keys", "user_api_key_projects")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column(
            "default_project_id",
            sa.Uuid(),
            sa.ForeignKey("projects.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "memberships",
        sa.Column(
            "user_id",
            sa.Uuid(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "project_id",
            sa.Uuid(),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_memberships_project_id", "memberships", ["project_id"])
    op.create_table(
        "user_api_keys",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "user_id",
            sa.Uuid(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hint", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_user_api_keys_user_id", "user_api_keys", ["user_id"])
    op.create_table(
        "user_api_key_projects",
        sa.Column(
            "key_id",
            sa.Uuid(),
            sa.ForeignKey("user_api_keys.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "project_id",
            sa.Uuid(),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        # dockyard_notify_change() is migration 0004's.
        for table in TABLES:
            op.execute(
                "CREATE TRIGGER dockyard_notify_change"
                f' AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "{table}"'
                " FOR EACH STATEMENT EXECUTE FUNCTION dockyard_notify_change()"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f'DROP TRIGGER IF EXISTS dockyard_notify_change ON "{table}"')
    op.drop_table("user_api_key_projects")
    op.drop_index("ix_user_api_keys_user_id", table_name="user_api_keys")
    op.drop_table("user_api_keys")
    op.drop_index("ix_memberships_project_id", table_name="memberships")
    op.drop_table("memberships")
    op.drop_table("users")
