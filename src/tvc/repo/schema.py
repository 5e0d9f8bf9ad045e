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
    # The last version number handed out: numbers come from the transaction that records the
    # version (UPDATE … RETURNING), never reused, not even after `tvc rm`.
    sa.Column("last_number", sa.Integer, nullable=False, server_default="0"),
    sa.Column("deleted", sa.Float, nullable=True),  # `tvc rm MODEL`: when
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
    # The metrics as committed (part of the id); ``extra_metrics`` holds those added later with
    # ``tvc metric`` (not part of the id). A loaded Version shows both, later ones winning.
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("extra_metrics", sa.JSON, nullable=True),
    sa.Column("datasets", sa.JSON, nullable=False),
    sa.Column("code", sa.JSON, nullable=True),
    sa.Column("base", sa.String(64), nullable=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    # `tvc rm`: the version is a tombstone (its files are gone; the record stays for history,
    # parents and the audit log, and its number is never reused).
    sa.Column("deleted", sa.Float, nullable=True),
    sa.UniqueConstraint("model_id", "number", name="uq_versions_model_number"),
    sa.Index("ix_versions_state", "state"),
    sa.Index("ix_versions_created", "created"),
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
    sa.Index("ix_refs_version_id", "version_id"),
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
    # An alias move made by ``rollback``: replaying the history as a stack needs to know.
    sa.Column("rollback", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_ref_events_ref", "model_id", "kind", "name"),
)

# The lifecycle audit log: every state transition of a version, append-only. ``forced`` marks a
# transition made with --force that overrode something; ``overridden`` says what (an illegal
# transition, a failed gate).
state_events = sa.Table(
    "state_events",
    metadata,
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
    sa.Index("ix_state_events_model_id", "model_id"),
    sa.Index("ix_state_events_version_id", "version_id"),
)

# Metrics added to a version after its commit (``tvc metric``), append-only: the values set and
# what those keys held before (null for a new key).
metric_events = sa.Table(
    "metric_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.id"), nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("previous", sa.JSON, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index("ix_metric_events_model_id", "model_id"),
    sa.Index("ix_metric_events_version_id", "version_id"),
)

# The journal's outbox. Every metadata transaction that changes something a rebuild could not
# derive from the versions themselves (numbers, refs, states, later metrics, deletions) adds
# its event here, in the same transaction; right after it commits, the event is written to the
# store as the object ``name`` (``written`` set). ``tvc fsck --rebuild-index`` replays those
# objects; an event object that this table lacks means the DB is older than the store.
journal = sa.Table(
    "journal",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("written", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_journal_written", "written"),
)

# Access tokens of a `tvc server` (:mod:`tvc.server.tokens`): here, not in a local file, so that
# every replica of a server on one PostgreSQL sees a token created or revoked through another
# at its next request. Only the SHA-256 of the secret is kept. ``live_name`` is the name while
# the token is live and NULL once revoked: the unique constraint on it lets the database, not a
# process lock, refuse two live tokens of one name created at once through two replicas.
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("live_name", sa.String(64), nullable=True, unique=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("models", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=True),
    sa.Column("revoked", sa.Float, nullable=True),
)
