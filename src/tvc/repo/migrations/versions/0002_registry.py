"""Registry: metrics added after the commit, lifecycle and metric audit logs, rollback marks on
alias moves, and the indexes search uses.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions") as b:
        b.add_column(sa.Column("extra_metrics", sa.JSON, nullable=True))
        b.create_index("ix_versions_state", ["state"])
        b.create_index("ix_versions_created", ["created"])
    with op.batch_alter_table("refs") as b:
        b.create_index("ix_refs_version_id", ["version_id"])
    with op.batch_alter_table("ref_events") as b:
        b.add_column(sa.Column("rollback", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "state_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("old_state", sa.String(32), nullable=False),
        sa.Column("new_state", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("forced", sa.Boolean, nullable=False),
        sa.Column("overridden", sa.Text, nullable=True),
    )
    op.create_index("ix_state_events_model_id", "state_events", ["model_id"])
    op.create_index("ix_state_events_version_id", "state_events", ["version_id"])
    op.create_table(
        "metric_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("previous", sa.JSON, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_metric_events_model_id", "metric_events", ["model_id"])
    op.create_index("ix_metric_events_version_id", "metric_events", ["version_id"])


def downgrade() -> None:
    op.drop_table("metric_events")
    op.drop_table("state_events")
    with op.batch_alter_table("ref_events") as b:
        b.drop_column("rollback")
    with op.batch_alter_table("refs") as b:
        b.drop_index("ix_refs_version_id")
    with op.batch_alter_table("versions") as b:
        b.drop_index("ix_versions_created")
        b.drop_index("ix_versions_state")
        b.drop_column("extra_metrics")
