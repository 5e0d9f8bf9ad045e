"""The metadata store: the narrow interface every layer above uses for refs, versions, the chunk
index's transactions and the audit log.

Vocabulary
- *metadata store*: the DB (SQLite embedded, PostgreSQL by URL) seen through :class:`Metadata`.
  It is an **index** over the store: versions and manifests are records in packs, and every
  change the versions do not imply — version numbers, branch moves, tags, aliases, lifecycle
  states, metrics added later, deletions — is an *event* of the *journal*, an object in the store.
  ``tvc fsck --rebuild-index`` rebuilds the DB from those objects alone.
- *write transaction*: short, and the only thing serialized. On SQLite it starts with ``BEGIN
  IMMEDIATE`` (one writer at a time, for milliseconds); on PostgreSQL a model's row is locked
  (``SELECT … FOR UPDATE``) by the transactions that change that model. Hashing, encoding and
  writing packs happen before it, outside any lock: a rollback never waits for a large commit.
- *compare-and-swap*: a ref moves only if it still points where the caller saw it
  (``UPDATE … WHERE version_id = :expected``); creating one is ``INSERT … ON CONFLICT DO
  NOTHING``. A lost race is an error, never a silent overwrite.
- *outbox*: a transaction adds its journal events to the ``journal`` table; right after it
  commits they are written to the store and marked written. An event whose write failed (the
  process died in between) is written by the next transaction's flush, or by fsck.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tvc.errors import ConflictError, ExistsError, TvcError, UnknownRefError
from tvc.repo import db, names
from tvc.repo import schema as s
from tvc.repo.version import FileEntry, Version, version_from_row
from tvc.store import hashing
from tvc.store.backends.base import Backend
from tvc.store.index import db_errors, insert_new

if TYPE_CHECKING:
    from tvc.repo.manifest import Manifest

JOURNAL_PREFIX = "journal/"
ANY = object()  # move_ref without a compare-and-swap condition


# Who a server acts for: the token's name, set around one request's registry call (a context
# variable, not TVC_AUTHOR: the server runs many requests at once, in threads).
_acting: ContextVar[str | None] = ContextVar("tvc_acting_as", default=None)


@contextmanager
def acting_as(name: str) -> Iterator[None]:
    """Record every change made inside as ``name``'s (``default_author`` answers it)."""
    token = _acting.set(name)
    try:
        yield
    finally:
        _acting.reset(token)


def default_author() -> str:
    acting = _acting.get()
    if acting:
        return acting
    env = os.environ.get("TVC_AUTHOR")
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "config", "user.name"], capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return getpass.getuser()


def load_versions(
    conn: sa.Connection,
    ids: Any,
    *,
    files: bool = True,
    rows_out: dict[str, Any] | None = None,
) -> dict[str, Version]:
    """Versions by id (a list, or a subquery of ids) with their parents and, with ``files``,
    their files: two statements however many versions (one without files), where
    :meth:`Metadata.load_version` spends three on each. ``rows_out`` receives the ``versions``
    rows themselves (the committed metrics, the model id)."""
    v, p, mo = s.versions.c, s.version_parents.c, s.models.c
    rows: dict[str, Any] = {}
    parents: dict[str, list[str]] = {}
    for row in conn.execute(
        sa.select(s.versions, mo.name.label("model_name"), p.parent_id)
        .join_from(s.versions, s.models, v.model_id == mo.id)
        .outerjoin(s.version_parents, p.version_id == v.id)
        .where(v.id.in_(list(ids) if isinstance(ids, (list, tuple, set)) else ids))
        .order_by(v.id, p.position)
    ):
        rows.setdefault(row.id, row)
        lst = parents.setdefault(row.id, [])
        if row.parent_id is not None:
            lst.append(row.parent_id)
    fs: dict[str, list[FileEntry]] = {}
    if files and rows:
        f = s.version_files.c
        for vid, *entry in conn.execute(
            sa.select(f.version_id, f.path, f.size, f.digest, f.format, f.manifest_id)
            .where(f.version_id.in_(list(rows)))
            .order_by(f.version_id, f.path)
        ):
            fs.setdefault(vid, []).append(FileEntry(*entry))
    if rows_out is not None:
        rows_out.update(rows)
    return {
        vid: version_from_row(r, r.model_name, parents[vid], tuple(fs.get(vid, ())))
        for vid, r in rows.items()
    }


def journal_name(body: bytes, at: float) -> str:
    """Events sort by time: a zero-padded nanosecond stamp, then part of the body's hash."""
    return f"{JOURNAL_PREFIX}{int(at * 1e9):019d}-{hashing.digest(body)[:16]}"


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode()


class Metadata:
    """Transactions and the operations on models, refs, versions and the audit log."""

    def __init__(self, engine: sa.Engine, backend: Backend, where: str) -> None:
        self.engine = engine
        self.backend = backend
        self.where = where  # for error messages: the DB's path or URL

    # -- transactions ----------------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read transaction: one snapshot for every query in it; never waits for writers."""
        with self._translated(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A short write transaction; its journal events reach the store right after it."""
        with self._translated():
            with self.engine.connect() as conn:
                conn.execution_options(**{db.WRITE: True})
                with conn.begin():
                    yield conn
            self.flush_journal()

    def _translated(self):
        return db_errors(self.where)

    # -- models ------------------------------------------------------------------------------
    def model_id(self, conn: sa.Connection, model: str, *, create: bool = False) -> int:
        names.check_model_name(model)
        mo = s.models.c
        row = conn.execute(sa.select(mo.id, mo.deleted).where(mo.name == model)).first()
        if row is not None and row.deleted is None:
            return row.id
        if not create:
            known = conn.execute(sa.select(mo.name).where(mo.deleted.is_(None)).order_by(mo.name))
            listed = ", ".join(r[0] for r in known) or "none yet"
            gone = " (it was deleted)" if row is not None else ""
            raise UnknownRefError(f"unknown model {model!r}{gone} (models: {listed})")
        if row is not None:  # a deleted model committed to again: numbering goes on
            conn.execute(s.models.update().where(mo.id == row.id).values(deleted=None))
            return row.id
        row = {"name": model, "created": time.time(), "last_number": 0}
        insert_new(conn, s.models, [row], keys=["name"])
        return conn.execute(sa.select(mo.id).where(mo.name == model)).scalar_one()

    def lock_model(self, conn: sa.Connection, mid: int) -> None:
        """Serialize the transactions that change one model (PostgreSQL; SQLite's write
        transactions are serialized already by BEGIN IMMEDIATE)."""
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(s.models.c.id).where(s.models.c.id == mid).with_for_update())

    def lock_model_of(self, conn: sa.Connection, ref: str) -> int:
        """Lock the model ``ref`` names before anything of it is read, and return its id.

        A read-modify-write (a state transition, metrics added later, a removal) must read
        after the lock: under PostgreSQL's READ COMMITTED a row read before it may be stale by
        the time the lock is granted, and two replicas would both make the same transition."""
        mid = self.model_id(conn, names.parse_ref(ref).model)
        self.lock_model(conn, mid)
        return mid

    def take_number(self, conn: sa.Connection, mid: int) -> int:
        """The next version number of a model, from the transaction that records the version."""
        mo = s.models.c
        conn.execute(s.models.update().where(mo.id == mid).values(last_number=mo.last_number + 1))
        return conn.execute(sa.select(mo.last_number).where(mo.id == mid)).scalar_one()

    # -- refs --------------------------------------------------------------------------------
    def ref_target(self, conn: sa.Connection, mid: int, kind: str, name: str) -> str | None:
        r = s.refs.c
        q = sa.select(r.version_id).where(r.model_id == mid, r.kind == kind, r.name == name)
        return conn.execute(q).scalar()

    def move_ref(
        self,
        conn: sa.Connection,
        mid: int,
        kind: str,
        name: str,
        vid: str | None,
        *,
        expected: Any = ANY,
        actor: str | None = None,
        reason: str = "",
        forced: bool = False,
        record: bool | None = None,
        rollback: bool = False,
        journal: bool = True,
    ) -> str | None:
        """Point (or, with ``vid`` None, delete) a ref by compare-and-swap; returns the old
        target. ``expected``: where the ref must point now (None: must not exist); a mismatch
        raises ConflictError. Without it the move is unconditional but still atomic.

        Moves of tags and aliases, and creation/deletion of branches, go to ``ref_events``;
        a branch advancing on commit does not (the version history already says it).
        """
        r = s.refs.c
        where = (r.model_id == mid, r.kind == kind, r.name == name)
        old = self.ref_target(conn, mid, kind, name)
        if expected is not ANY and old != expected:
            raise ConflictError(
                f"{kind} {name} moved meanwhile (it points at "
                f"{old[:12] if old else 'nothing'}, not {expected[:12] if expected else 'nothing'})"
                "; run the command again"
            )
        if old is None and vid is not None:
            row = {"model_id": mid, "kind": kind, "name": name, "version_id": vid}
            if insert_new(conn, s.refs, [row]) != 1:
                raise ConflictError(f"{kind} {name} was created meanwhile; run the command again")
        elif vid is None:
            done = conn.execute(s.refs.delete().where(*where, r.version_id == old))
            if old is not None and done.rowcount != 1:
                raise ConflictError(f"{kind} {name} moved meanwhile; run the command again")
        elif old != vid:
            done = conn.execute(
                s.refs.update().where(*where, r.version_id == old).values(version_id=vid)
            )
            if done.rowcount != 1:
                raise ConflictError(f"{kind} {name} moved meanwhile; run the command again")
        if record is None:
            record = kind != "branch" or old is None or vid is None
        actor = actor or default_author()
        at = time.time()
        if record:
            conn.execute(
                s.ref_events.insert().values(
                    model_id=mid,
                    kind=kind,
                    name=name,
                    old_version=old,
                    new_version=vid,
                    actor=actor,
                    at=at,
                    reason=reason,
                    forced=forced,
                    rollback=rollback,
                )
            )
        if journal:
            self.journal(
                conn,
                {
                    "type": "ref",
                    "model": self.model_name(conn, mid),
                    "kind": kind,
                    "name": name,
                    "old": old,
                    "new": vid,
                    "actor": actor,
                    "at": at,
                    "reason": reason,
                    "forced": forced,
                    "rollback": rollback,
                    "record": record,
                },
            )
        return old

    def create_ref(
        self, conn: sa.Connection, mid: int, kind: str, name: str, vid: str, **kw: Any
    ) -> None:
        if self.ref_target(conn, mid, kind, name) is not None:
            raise ExistsError(f"{kind} {name!r} already exists on {self.model_name(conn, mid)}")
        self.move_ref(conn, mid, kind, name, vid, expected=None, **kw)

    def model_name(self, conn: sa.Connection, mid: int) -> str:
        return conn.execute(sa.select(s.models.c.name).where(s.models.c.id == mid)).scalar_one()

    # -- versions ----------------------------------------------------------------------------
    def parents(self, conn: sa.Connection, vid: str) -> list[str]:
        p = s.version_parents.c
        q = sa.select(p.parent_id).where(p.version_id == vid).order_by(p.position)
        return [row[0] for row in conn.execute(q)]

    def load_version(self, conn: sa.Connection, vid: str, *, files: bool = True) -> Version:
        v, mo = s.versions.c, s.models.c
        row = conn.execute(
            sa.select(s.versions, mo.name)
            .join_from(s.versions, s.models, v.model_id == mo.id)
            .where(v.id == vid)
        ).first()
        if row is None:
            raise UnknownRefError(f"no version {vid}")
        fs: tuple[FileEntry, ...] = ()
        if files:
            f = s.version_files.c
            q = sa.select(f.path, f.size, f.digest, f.format, f.manifest_id).where(
                f.version_id == vid
            )
            fs = tuple(FileEntry(*r) for r in conn.execute(q.order_by(f.path)))
        return version_from_row(row, row.name, self.parents(conn, vid), fs)

    def version_by_number(self, conn: sa.Connection, mid: int, number: int) -> str | None:
        v = s.versions.c
        q = sa.select(v.id).where(v.model_id == mid, v.number == number)
        return conn.execute(q).scalar()

    def keep_manifests(self, conn: sa.Connection, manifests: Iterable[Manifest]) -> None:
        """Store the manifests of a version being recorded and keep them until it commits.

        The writer's half of gc's protocol for manifests: gc locks the rows it found unused
        (``FOR UPDATE``, in id order) and then deletes those still unreferenced. Here, on
        PostgreSQL, the rows are locked ``FOR KEY SHARE`` in id order after the insert: gc then
        waits for this transaction and sees the reference, or this one waits for gc and stores
        again what gc deleted just before. (Without it a push and gc could each see the other's
        half done: gc's delete then broke the foreign key and failed.) SQLite's write
        transactions are exclusive: nothing to lock.
        """
        bodies = {m.id: m.encode() for m in manifests}
        insert_new(conn, s.manifests, [{"id": i, "body": b} for i, b in bodies.items()])
        if conn.dialect.name != "postgresql" or not bodies:
            return
        m, ids, present = s.manifests.c, sorted(bodies), set()
        for i in range(0, len(ids), 500):
            q = sa.select(m.id).where(m.id.in_(ids[i : i + 500])).order_by(m.id)
            present.update(r[0] for r in conn.execute(q.with_for_update(key_share=True)))
        gone = [{"id": i, "body": bodies[i]} for i in ids if i not in present]
        insert_new(conn, s.manifests, gone)

    def insert_version(
        self,
        conn: sa.Connection,
        *,
        vid: str,
        mid: int,
        number: int,
        state: str,
        size: int,
        parents: list[str],
        files: list[FileEntry],
        meta: dict[str, Any],
    ) -> None:
        conn.execute(
            s.versions.insert().values(
                id=vid, model_id=mid, number=number, state=state, size=size, **meta
            )
        )
        if parents:
            conn.execute(
                s.version_parents.insert(),
                [{"version_id": vid, "position": i, "parent_id": p} for i, p in enumerate(parents)],
            )
        if files:
            conn.execute(
                s.version_files.insert(),
                [
                    {
                        "version_id": vid,
                        "path": fe.path,
                        "manifest_id": fe.manifest_id,
                        "size": fe.size,
                        "digest": fe.digest,
                        "format": fe.format,
                    }
                    for fe in files
                ],
            )

    # -- audit -------------------------------------------------------------------------------
    def record_state(self, conn: sa.Connection, mid: int, vid: str, **event: Any) -> None:
        conn.execute(s.state_events.insert().values(model_id=mid, version_id=vid, **event))
        self.journal(
            conn,
            {"type": "state", "model": self.model_name(conn, mid), "version": vid, **event},
        )

    def record_metrics(self, conn: sa.Connection, mid: int, vid: str, **event: Any) -> None:
        conn.execute(s.metric_events.insert().values(model_id=mid, version_id=vid, **event))
        self.journal(
            conn,
            {"type": "metrics", "model": self.model_name(conn, mid), "version": vid, **event},
        )

    # -- the journal -------------------------------------------------------------------------
    def journal(self, conn: sa.Connection, event: dict[str, Any]) -> str:
        """Add ``event`` to the outbox of the caller's transaction; returns its object name."""
        event.setdefault("at", time.time())
        body = encode_event(event)
        name = journal_name(body, event["at"])
        conn.execute(s.journal.insert().values(name=name, body=body, written=False))
        return name

    def flush_journal(self) -> int:
        """Write the outbox's unwritten events to the store; returns how many. Best effort: an
        event that cannot be written now stays in the outbox for the next flush."""
        j = s.journal.c
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(j.name, j.body).where(j.written.is_(False)).order_by(j.name)
                ).all()
                conn.rollback()
            if not rows:
                return 0
            for name, body in rows:
                self.backend.put(name, bytes(body))
            with self.engine.connect() as conn:
                conn.execution_options(**{db.WRITE: True})
                with conn.begin():
                    conn.execute(
                        s.journal.update()
                        .where(j.name.in_([n for n, _b in rows]))
                        .values(written=True)
                    )
        except (TvcError, sa.exc.DBAPIError):
            return 0
        return len(rows)
