"""The Alembic migrations produce exactly the tables the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tvc.repo import db


def test_migrations_match_metadata(tmp_path):
    engine = db.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate(engine)
    assert db.current_revision(engine) == db.SCHEMA_HEAD
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, db.metadata)
    assert diff == []
    db.migrate(engine)  # idempotent
    engine.dispose()
