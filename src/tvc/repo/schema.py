"""Version, manifest and ref tables, added to the store's ``MetaData`` (one DB, one migration path).

Schema changes go through Alembic (``tvc/repo/migrations``); ``tests/repo/test_schema.py`` checks
the migrations produce exactly these tables.
"""

from __future__ import annotations

import sqlalchemy as sa

from tvc.store.index import metadata

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("created", sa.Float, nullable=False),
)

versions = sa.Table(
    "versions",
    metadata,
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

version_parents = sa.Table(
    "version_parents",
    metadata,
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.id"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("parent_id", sa.String(64), sa.ForeignKey("versions.id"), nullable=False),
)

manifests = sa.Table(
    "manifests",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
)

version_files = sa.Table(
    "version_files",
    metadata,
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.id"), primary_key=True),
    sa.Column("path", sa.String(4096), primary_key=True),
    sa.Column("manifest_id", sa.String(64), sa.ForeignKey("manifests.id"), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("format", sa.String(32), nullable=False),
)

refs = sa.Table(
    "refs",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),  # branch | tag | alias
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.id"), nullable=False),
)

# Every move of a ref that people care about (aliases, tags, branch creation/deletion).
ref_events = sa.Table(
    "ref_events",
    metadata,
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
    sa.Index("ix_ref_events_ref", "model_id", "kind", "name"),
)
