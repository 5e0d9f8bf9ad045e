"""The read path of ``tvc log`` for a command's cold start: SQLite through the standard library.

Why: a ``tvc`` process that imports SQLAlchemy spends 0.19 s on that alone here — more than the
whole budget of a cold ``tvc log`` (0.15 s). This module answers the commonest read, the history
from a ref, with :mod:`sqlite3` and the plain SQL of a handful of indexed lookups, and gives up
(returns ``None``) on anything it is not sure of, so that the full path — which is the
reference — answers instead: a metadata DB that is not a local SQLite file, a schema not at
``SCHEMA_HEAD`` (the full path migrates), a registry that cannot be written (the full path's
read-only handling), an unknown, ambiguous or deleted ref (the full path's error messages).
A property test (tests/repo/test_coldread.py) checks that whenever this answers, it answers
exactly what :meth:`tvc.repo.repository.Repository.log` does.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from types import SimpleNamespace

from tvc.errors import TvcError
from tvc.repo import names
from tvc.repo.location import FORMAT_VERSION, REGISTRY_DIR, SCHEMA_HEAD, find_root, read_config
from tvc.repo.version import Version, version_from_row, walk_history

_JSON = ("params", "metrics", "extra_metrics", "datasets", "code")
_VERSION = (
    "SELECT v.id, v.number, v.message, v.author, v.created, v.params, v.metrics, "
    "v.extra_metrics, v.datasets, v.code, v.base, v.state, v.size, v.deleted, m.name "
    "FROM versions v JOIN models m ON v.model_id = m.id WHERE v.id = ?"
)


class _Unsure(Exception):
    """The full path must answer (internal)."""


def _connect(path: str | os.PathLike[str] | None) -> sqlite3.Connection:
    try:
        regdir = find_root(path) / REGISTRY_DIR
        config = read_config(regdir)
    except TvcError:
        raise _Unsure from None
    if config.get("core", {}).get("format") != FORMAT_VERSION:
        raise _Unsure
    url = config.get("metadata", {}).get("url") or "sqlite:///tvc.db"
    if not url.startswith("sqlite:///"):
        raise _Unsure
    dbfile = regdir / url[len("sqlite:///") :]
    if not os.access(dbfile, os.R_OK | os.W_OK) or not os.access(regdir, os.W_OK):
        raise _Unsure  # read-only sharing: the full path knows how to open it
    try:
        conn = sqlite3.connect(f"{Path(dbfile).absolute().as_uri()}?mode=rw", uri=True)
        conn.isolation_level = None
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 2000")
        conn.execute("BEGIN")  # one snapshot for the whole walk
        rev = [tuple(r) for r in conn.execute("SELECT version_num FROM alembic_version")]
    except sqlite3.Error:
        raise _Unsure from None
    if rev != [(SCHEMA_HEAD,)]:
        conn.close()
        raise _Unsure
    return conn


def _version(conn: sqlite3.Connection, vid: str) -> Version:
    row = conn.execute(_VERSION, (vid,)).fetchone()
    if row is None:
        raise _Unsure
    r = {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row iterates values
    for k in _JSON:
        r[k] = json.loads(r[k]) if r[k] is not None else None
    parents = [
        p
        for (p,) in conn.execute(
            "SELECT parent_id FROM version_parents WHERE version_id = ? ORDER BY position", (vid,)
        )
    ]
    return version_from_row(SimpleNamespace(**r), r["name"], parents)


def _resolve(conn: sqlite3.Connection, ref: str) -> Version:
    try:
        r = names.parse_ref(ref)
        names.check_model_name(r.model)
    except TvcError:
        raise _Unsure from None
    row = conn.execute("SELECT id, deleted FROM models WHERE name = ?", (r.model,)).fetchone()
    if row is None or row[1] is not None:
        raise _Unsure
    mid = row[0]
    m = names.VERSION_RE.match(r.rev)
    if m:
        number = int(m.group(1))
        if number >= 2**62:
            raise _Unsure
        found = conn.execute(
            "SELECT id FROM versions WHERE model_id = ? AND number = ?", (mid, number)
        ).fetchall()
    else:
        found = conn.execute(
            "SELECT DISTINCT version_id FROM refs WHERE model_id = ? AND name = ?", (mid, r.rev)
        ).fetchall()
        if names.ID_PREFIX_RE.match(r.rev):
            found = [
                *found,
                *conn.execute(
                    "SELECT id FROM versions WHERE model_id = ? AND deleted IS NULL "
                    "AND substr(id, 1, ?) = ?",
                    (mid, len(r.rev), r.rev),
                ),
            ]
    if len({f[0] for f in found}) != 1:
        raise _Unsure  # unknown or ambiguous: the full path words the error
    vid = found[0][0]
    for _ in range(r.ancestors):
        p = conn.execute(
            "SELECT parent_id FROM version_parents WHERE version_id = ? AND position = 0", (vid,)
        ).fetchone()
        if p is None:
            raise _Unsure
        vid = p[0]
    version = _version(conn, vid)
    if version.deleted is not None:
        raise _Unsure
    return version


def log(
    path: str | os.PathLike[str] | None, ref: str, n: int | None = None
) -> list[tuple[Version, list[tuple[str, str]]]] | None:
    """``Repository.log(ref, n)`` with each version's refs (``refs_pointing_at``), or None
    when the full path must answer. Versions carry no ``files`` (log shows none)."""
    try:
        conn = _connect(path)
    except _Unsure:
        return None
    try:
        out = walk_history(_resolve(conn, ref), lambda vid: _version(conn, vid), n)
        return [
            (
                v,
                [
                    (k, nm)
                    for k, nm in conn.execute(
                        "SELECT kind, name FROM refs WHERE version_id = ? ORDER BY kind", (v.id,)
                    )
                ],
            )
            for v in out
        ]
    except (_Unsure, sqlite3.Error, ValueError):
        return None
    finally:
        conn.close()
