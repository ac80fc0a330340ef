"""registry verification: when the running check of an external registry began

Revision ID: 0007
Revises: 0006

`status` is `verifying` while a check is asked for or running; `verification_started_at`
says since when (the request, then the moment a process took the check on). A check whose
process died leaves both behind: once the time is old enough, any process takes it on
again (dockyard.domain.verification). NULL for every registry not being checked, so the
index holds only the few that are. Existing registries keep their status until they change
or are verified.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("container_registries") as batch:
        batch.add_column(sa.Column("verification_started_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_container_registries_verification",
        "container_registries",
        ["verification_started_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_container_registries_verification", table_name="container_registries")
    with op.batch_alter_table("container_registries") as batch:
        batch.drop_column("verification_started_at")
