"""audit events: who generated or revoked credentials, changed registries, failed to log in

Revision ID: 0005
Revises: 0004

Listed per project, newest first: hence the index on (project_id, created_at). Not among
the tables that wake PostgreSQL's change feed (0004): no cached /v1 answer depends on it,
and a failed login must not make every replica drop its cached reads.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "project_id",
            sa.Uuid(),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("registry_id", sa.Uuid(), nullable=True),
        sa.Column("source", sa.String(64), nullable=True),
    )
    op.create_index("ix_audit_events_project_created", "audit_events", ["project_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_project_created", table_name="audit_events")
    op.drop_table("audit_events")
