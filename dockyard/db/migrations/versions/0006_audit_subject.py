"""audit subject: which repository or tag a deletion through /v1 removed

Revision ID: 0006
Revises: 0005

`repository.deleted` and `tag.deleted` name what they removed (`<repository>[:<tag>]`);
older events have none.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("subject", sa.String(400), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("subject")
