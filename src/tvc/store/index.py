"""The chunk index: which pack holds which chunk, where, and how it is encoded.

These tables live in the registry's metadata DB (SQLite by default, PostgreSQL by URL) beside the
version tables of the repo layer, so that one transaction can index the chunks of a commit and
record the version that uses them. The store defines them on its own ``MetaData``; the repo adds
its tables to the same object, and Alembic migrates the whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from tvc.errors import ConflictError, IntegrityError, LockTimeoutError, StorageError, TvcError

metadata = sa.MetaData()

packs = sa.Table(
    "packs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    # Set when gc copied the pack's live entries elsewhere (or none were left): the index no
    # longer points into it, and its file is deleted. Readers that still held an old row
    # re-read the index and find the new copy (ChunkStore.read).
    sa.Column("retired", sa.Float, nullable=True),
)

chunks = sa.Table(
    "chunks",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("pack_id", sa.Integer, sa.ForeignKey("packs.id"), nullable=False, index=True),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("stored_len", sa.BigInteger, nullable=False),
    sa.Column("raw_len", sa.BigInteger, nullable=False),
    sa.Column("codec", sa.SmallInteger, nullable=False),
    # For delta chunks: the chunk this one is encoded against, and the chain length to a full one.
    sa.Column("base", sa.String(64), nullable=True),
    sa.Column("depth", sa.SmallInteger, nullable=False, default=0),
    # What the chunk would occupy without delta coding: lets `stats` split delta from compression.
    sa.Column("plain_len", sa.BigInteger, nullable=False),
    # What the entry holds: a chunk of a file, or one of the repo's records kept in packs so the
    # index can be rebuilt from the store (a manifest, a version). See tvc.store.packs.Kind.
    sa.Column("kind", sa.SmallInteger, nullable=False, server_default="0"),
    # fsck found the stored copy missing or corrupt: dedup must not trust it, and the next
    # commit of the same bytes stores them again and points this row at the new copy.
    sa.Column("damaged", sa.Boolean, nullable=False, server_default=sa.false()),
    # gc's mark: no live version used the chunk when gc looked. A commit that uses it again
    # clears the mark in its own transaction; gc deletes only rows still marked (see repo.gc).
    sa.Column("dead_since", sa.Float, nullable=True),
)

# Write sessions in progress (commits, pushes): gc keeps every unindexed pack that a live
# session may have written. A session renews its lease while it runs; a crashed one expires.
uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)

# Named leases held across hosts through the database (e.g. one gc at a time).
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)


def insert_new(
    conn: sa.Connection, table: sa.Table, rows: list[dict], keys: list[str] | None = None
) -> int:
    """Insert ``rows``, skipping those whose primary key exists (``ON CONFLICT DO NOTHING``).

    Two writers that store the same chunk in different packs both index it; the first row
    wins, the other copy is garbage in its pack that gc reclaims. No read-then-insert race.
    """
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    keys = keys or [c.name for c in table.primary_key.columns]
    stmt = insert(table).on_conflict_do_nothing(index_elements=keys)
    if len(rows) == 1:  # callers that need to know whether it went in (refs, models)
        returning = stmt.returning(*table.primary_key.columns)
        return len(conn.execute(returning, rows[0]).all())
    for i in range(0, len(rows), 500):
        conn.execute(stmt, rows[i : i + 500])
    return len(rows)


def damaged(exc: Exception, where: str) -> IntegrityError:
    """The error for a DB that SQLite or PostgreSQL cannot read as a database."""
    orig = getattr(exc, "orig", exc)
    return IntegrityError(
        f"the metadata DB {where} is damaged ({orig}); restore a backup of it, or rebuild it "
        "from the store with `tvc fsck --rebuild-index`"
    )


@contextmanager
def db_errors(where: str) -> Iterator[None]:
    """Turn the DB driver's errors into tvc's: a lock held too long, a full disk, a damaged
    file — each one line that says what to do, never a driver traceback."""
    try:
        yield
    except TvcError:
        raise
    except sa.exc.IntegrityError as exc:  # a constraint another writer won meanwhile
        raise ConflictError(
            f"the registry changed meanwhile ({str(exc.orig).splitlines()[0]}); run the "
            "command again"
        ) from exc
    except sa.exc.OperationalError as exc:
        msg = str(exc.orig)
        if "locked" in msg or "busy" in msg:
            raise LockTimeoutError(
                f"the metadata DB {where} stayed locked by another writer ({msg}); "
                "try again, or raise TVC_LOCK_TIMEOUT"
            ) from exc
        if any(w in msg for w in ("disk", "full", "readonly", "unable to open", "connect")):
            raise StorageError(f"metadata DB {where}: {msg}") from exc
        raise damaged(exc, where) from exc
    except sa.exc.DatabaseError as exc:
        raise damaged(exc, where) from exc
    except json.JSONDecodeError as exc:  # a JSON column that does not parse: a damaged row
        raise damaged(exc, where) from exc
