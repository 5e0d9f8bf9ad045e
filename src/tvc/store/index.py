"""The chunk index: which pack holds which chunk, where, and how it is encoded.

These tables live in the registry's metadata DB (SQLite by default, PostgreSQL by URL) beside the
version tables of the repo layer, so that one transaction can index the chunks of a commit and
record the version that uses them. The store defines them on its own ``MetaData``; the repo adds
its tables to the same object, and Alembic migrates the whole.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

packs = sa.Table(
    "packs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
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
)
