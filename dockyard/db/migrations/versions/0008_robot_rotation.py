"""robot rotation: a previous secret valid for a grace period, and optional expiry

Revision ID: 0008
Revises: 0007

All nullable, so existing robots keep working unchanged: no previous secret, no expiry.
`previous_secret_hash` stays after its grace period ends (with `previous_valid_until` in
the past): it marks a robot as rotated at least once, which is what tells a registry
token issued before rotation existed (it names no secret) from one that is still good.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("robot_accounts") as batch:
        batch.add_column(sa.Column("previous_secret_hash", sa.String(255), nullable=True))
        batch.add_column(
            sa.Column("previous_valid_until", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lifetime_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("robot_accounts") as batch:
        batch.drop_column("lifetime_seconds")
        batch.drop_column("expires_at")
        batch.drop_column("previous_valid_until")
        batch.drop_column("previous_secret_hash")
