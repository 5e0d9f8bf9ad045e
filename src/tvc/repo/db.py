"""The metadata DB: engine setup and schema migrations.

SQLite (WAL, ``synchronous=FULL``) is the embedded default: a commit acknowledged to the user is
in the WAL and fsynced, so it survives a crash. PostgreSQL works by URL. Every open checks the
schema revision and migrates with Alembic when it is behind, so an old registry keeps working
after an upgrade of tvc.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from tvc.errors import StorageError
from tvc.repo import schema  # noqa: F401 - registers the repo tables
from tvc.store.index import metadata

SCHEMA_HEAD = "0002"
_MIGRATIONS = Path(__file__).parent / "migrations"


def create_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def current_revision(engine: sa.Engine) -> str | None:
    """The schema revision Alembic recorded, read directly: importing Alembic costs 0.2 s of
    every CLI start, and it is only needed when there is something to migrate."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to ``SCHEMA_HEAD`` (a no-op when it is there already)."""
    try:
        if current_revision(engine) == SCHEMA_HEAD:
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot open the metadata DB: {exc.orig}") from exc


__all__ = ["SCHEMA_HEAD", "create_engine", "metadata", "migrate"]
