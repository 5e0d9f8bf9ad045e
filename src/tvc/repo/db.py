"""The metadata DB: URLs, engine setup and schema migrations.

SQLite (WAL, ``synchronous=FULL``) is the embedded default: a commit acknowledged to the user is
in the WAL and fsynced, so it survives a crash. PostgreSQL works by URL. The DB is an *index*
over the store (see :mod:`tvc.repo.meta`), so it is opened strictly: a missing or empty DB is an
error that names the rebuild, never a fresh start, and a schema that is behind is migrated with
Alembic.

Transactions: SQLite's default ``BEGIN`` takes its write lock only at the first write, so two
read-then-write transactions can deadlock; every write transaction here starts with ``BEGIN
IMMEDIATE`` instead (it waits for the lock up front, up to the busy timeout), and a read
transaction with a plain ``BEGIN`` sees one snapshot for all its queries. pysqlite's own
transaction handling is turned off so that SQLAlchemy's begin is the only one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlalchemy as sa

from tvc.errors import StorageError, UsageError
from tvc.repo import schema  # noqa: F401 - registers the repo tables
from tvc.repo.location import SCHEMA_HEAD
from tvc.store.index import damaged, metadata

_MIGRATIONS = Path(__file__).parent / "migrations"
WRITE = "tvc_write"  # execution option of a connection whose transaction writes


def normalize_url(url: str, base: Path) -> str:
    """A metadata URL as SQLAlchemy takes it; a relative SQLite path lives under ``base``.

    Only the schemes tvc supports are accepted: a typo must not open some other database.
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            raise UsageError(f"metadata URL {url!r}: give a file (sqlite:///PATH)")
        return f"sqlite:///{base / path}" if not path.startswith("/") else url
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise UsageError(
        f"unknown metadata URL {scheme!r}: use sqlite:///PATH or postgresql://USER@HOST/DB"
    )


def sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def read_only_url(url: str) -> str:
    """The URL that opens a SQLite DB without writing anything beside it (a registry shared
    read-only: no write permission on ``.tvc/``, or a read-only mount).

    ``mode=ro`` reads a WAL database while its writer keeps the ``-wal``/``-shm`` files; with
    none there (no writer active) SQLite could not create them, so the file is opened
    ``immutable``. Either way nothing is written.
    """
    path = sqlite_path(url)
    assert path is not None
    wal = path.with_name(path.name + "-wal")
    flag = "mode=ro" if wal.exists() else "immutable=1"
    return f"sqlite:///file:{path}?{flag}&uri=true"


def create_engine(url: str, *, busy_timeout: float = 60.0) -> sa.Engine:
    if url.startswith("sqlite"):
        read_only = "mode=ro" in url or "immutable=1" in url
        # SQLite waits for a lock in C, where Ctrl-C cannot reach it: wait in short slices
        # (a tenth of a second each) and loop here in Python up to the real timeout.
        slice_ = min(0.1, busy_timeout)
        engine = sa.create_engine(url, connect_args={"timeout": slice_, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            dbapi_conn.isolation_level = None  # SQLAlchemy's begin below is the only one
            cur = dbapi_conn.cursor()
            if not read_only:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(slice_ * 1000)}")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):  # pragma: no cover - trivial
            if not conn.get_execution_options().get(WRITE):
                conn.exec_driver_sql("BEGIN")
                return
            deadline = time.monotonic() + busy_timeout
            while True:
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    return
                except sa.exc.OperationalError as exc:
                    if "locked" not in str(exc.orig) or time.monotonic() >= deadline:
                        raise
                time.sleep(0.02)

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def current_revision(engine: sa.Engine) -> str | None:
    """The schema revision Alembic recorded, read directly: importing Alembic costs 0.2 s of
    every CLI start, and it is only needed when there is something to migrate."""
    try:
        with engine.connect() as conn:
            # One query (a command's only schema check): a missing table is the error below.
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        if _no_table(exc):
            return None
        if isinstance(exc, sa.exc.ProgrammingError):
            raise damaged(exc, str(engine.url)) from exc
        raise StorageError(f"cannot open the metadata DB: {exc.orig}") from exc
    except sa.exc.DatabaseError as exc:
        raise damaged(exc, str(engine.url)) from exc


def _no_table(exc: sa.exc.DBAPIError) -> bool:
    """Whether the query failed only because ``alembic_version`` does not exist (SQLite says
    "no such table", PostgreSQL raises UndefinedTable)."""
    text = str(exc.orig)
    undefined = type(exc.orig).__name__ == "UndefinedTable"
    return "alembic_version" in text and ("no such table" in text or undefined)


_MIGRATING = threading.Lock()


def migrate(engine: sa.Engine, rev: str | bool | None = False) -> None:
    """Bring the schema to ``SCHEMA_HEAD`` (a no-op when it is there already); ``rev``: the
    revision the caller just read with :func:`current_revision` (not read again)."""
    try:
        if rev is False:
            rev = current_revision(engine)
        if rev == SCHEMA_HEAD:
            return
        if rev is not None and rev > SCHEMA_HEAD:
            raise UsageError(
                f"the metadata DB has schema {rev}, newer than this tvc knows ({SCHEMA_HEAD}): "
                "upgrade tvc"
            )
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        # Alembic keeps per-run state in module globals: two threads migrating at once (two
        # registries created by one process) crashed with KeyError('script'). Within a process
        # only; across processes the DB's own locks order the migrations.
        with _MIGRATING, engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
    except sa.exc.OperationalError as exc:
        raise StorageError(f"cannot open the metadata DB: {exc.orig}") from exc


__all__ = [
    "SCHEMA_HEAD",
    "create_engine",
    "current_revision",
    "metadata",
    "migrate",
    "normalize_url",
]
