"""Access tokens move from `.tvc/tokens.json` into the metadata DB (several server replicas on
one PostgreSQL share them; the file, where one exists, is imported once by the server).

Revision ID: 0004_tokens
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_tokens"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("live_name", sa.String(64), nullable=True, unique=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("models", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("expires", sa.Float, nullable=True),
        sa.Column("revoked", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("tokens")
