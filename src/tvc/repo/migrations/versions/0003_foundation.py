"""Foundation for sharing: version numbers from a per-model counter, tombstones for `tvc rm`,
chunk marks (kind, damaged, gc's dead mark), retired packs, upload leases and the journal outbox.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as b:
        b.add_column(sa.Column("last_number", sa.Integer, nullable=False, server_default="0"))
        b.add_column(sa.Column("deleted", sa.Float, nullable=True))
    op.execute(
        "UPDATE models SET last_number = COALESCE("
        "(SELECT MAX(number) FROM versions WHERE versions.model_id = models.id), 0)"
    )
    with op.batch_alter_table("versions") as b:
        b.add_column(sa.Column("deleted", sa.Float, nullable=True))
    with op.batch_alter_table("packs") as b:
        b.add_column(sa.Column("retired", sa.Float, nullable=True))
    with op.batch_alter_table("chunks") as b:
        b.add_column(sa.Column("kind", sa.SmallInteger, nullable=False, server_default="0"))
        b.add_column(sa.Column("damaged", sa.Boolean, nullable=False, server_default=sa.false()))
        b.add_column(sa.Column("dead_since", sa.Float, nullable=True))
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_table(
        "journal",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("written", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_journal_written", "journal", ["written"])


def downgrade() -> None:
    op.drop_table("journal")
    op.drop_table("leases")
    op.drop_table("uploads")
    with op.batch_alter_table("chunks") as b:
        b.drop_column("dead_since")
        b.drop_column("damaged")
        b.drop_column("kind")
    with op.batch_alter_table("packs") as b:
        b.drop_column("retired")
    with op.batch_alter_table("versions") as b:
        b.drop_column("deleted")
    with op.batch_alter_table("models") as b:
        b.drop_column("deleted")
        b.drop_column("last_number")
