"""Initial schema: chunk index, models, versions, manifests, refs and ref events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "chunks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("pack_id", sa.Integer, sa.ForeignKey("packs.id"), nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("stored_len", sa.BigInteger, nullable=False),
        sa.Column("raw_len", sa.BigInteger, nullable=False),
        sa.Column("codec", sa.SmallInteger, nullable=False),
        sa.Column("base", sa.String(64), nullable=True),
        sa.Column("depth", sa.SmallInteger, nullable=False),
        sa.Column("plain_len", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_chunks_pack_id", "chunks", ["pack_id"])
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("datasets", sa.JSON, nullable=False),
        sa.Column("code", sa.JSON, nullable=True),
        sa.Column("base", sa.String(64), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("model_id", "number", name="uq_versions_model_number"),
    )
    op.create_table(
        "version_parents",
        sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.id"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("parent_id", sa.String(64), sa.ForeignKey("versions.id"), nullable=False),
    )
    op.create_table(
        "manifests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "version_files",
        sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.id"), primary_key=True),
        sa.Column("path", sa.String(4096), primary_key=True),
        sa.Column("manifest_id", sa.String(64), sa.ForeignKey("manifests.id"), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
    )
    op.create_table(
        "refs",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.id"), nullable=False),
    )
    op.create_table(
        "ref_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("old_version", sa.String(64), nullable=True),
        sa.Column("new_version", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("forced", sa.Boolean, nullable=False),
    )
    op.create_index("ix_ref_events_ref", "ref_events", ["model_id", "kind", "name"])


def downgrade() -> None:
    for table in (
        "ref_events",
        "refs",
        "version_files",
        "manifests",
        "version_parents",
        "versions",
        "models",
        "chunks",
        "packs",
    ):
        op.drop_table(table)
