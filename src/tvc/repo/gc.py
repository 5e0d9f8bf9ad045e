"""``gc``: reclaim what no live version uses — safely beside writers, readers and other hosts.

The protocol (it holds with concurrent commits, pushes, checkouts and fsck, on one host or on
several sharing a store and a DB):

1. **Refuse a DB that is behind the store.** Journal events the DB never recorded mean it was
   restored from an older backup or replaced; whatever it does not know would look like
   garbage. gc stops and names the rebuild.
2. **One gc at a time**, by a lease row in the DB (not a local lock: hosts share the DB).
3. **Mark, recompute, sweep.** gc computes the live set (every chunk, delta base, manifest and
   version record that a version not deleted uses) and marks every other indexed object
   ``dead_since``. It then computes the live set again and deletes, in one transaction, only
   rows that are still marked and still not live. A commit that reuses an object clears its
   mark in the commit's own transaction (:meth:`ChunkStore.claim`, rows locked on
   PostgreSQL); a commit whose objects were swept meanwhile finds them gone in that
   transaction and stores them again. So no acknowledged version ever references a swept
   object, without any lock held across the commit.
4. **Rewrite, then retire.** A pack with garbage (or a small pack, consolidated with others so
   many small commits do not leave thousands of tiny objects) has its live entries copied
   into a new durable pack; one transaction points their rows at the copy and marks the old
   pack retired; then its file is deleted. A reader that still held the old row finds the
   file gone, reads the index again and follows the chunk to its new pack.
   Objects a push in progress indexed (packs created after the oldest live upload lease
   began) are live too: the push records the versions that use them only at its end.
5. **Unindexed packs are someone's write in flight** until proven otherwise: gc deletes one only
   when it is older than the grace period (default 1 hour, ``--grace``) and no live upload
   lease (a commit or push in progress, table ``uploads``) started before it was written, and
   never one that holds a version record the DB lacks (a commit that died after writing all
   its packs: ``fsck --rebuild-index`` recovers it). Temp files in staging follow the
   same rule.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tvc.errors import ConflictError, IntegrityError, StorageError
from tvc.repo import schema as s
from tvc.repo.check import GRACE, REBUILD, db_behind
from tvc.store.index import chunks as chunks_t
from tvc.store.index import leases as leases_t
from tvc.store.index import packs as packs_t
from tvc.store.index import uploads as uploads_t
from tvc.store.packs import (
    ENTRY,
    FOOTER,
    MAGIC,
    TRAILER_ROW,
    Kind,
    PackWriter,
    pack_object_name,
    read_pack_index,
)

if TYPE_CHECKING:
    from tvc.repo.repository import Repository

SMALL_PACK = 8 * 1024 * 1024  # packs below this are consolidated when there are several
LEASE = 3600.0


def collect_garbage(repo: Repository, *, dry_run: bool, grace: float | None) -> dict[str, Any]:
    grace = GRACE if grace is None else max(0.0, grace)
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "unindexed_packs": 0,
        "packs_removed": 0,
        "packs_rewritten": 0,
        "chunks_removed": 0,
        "manifests_removed": 0,
        "bytes_freed": 0,
        "temp_files": 0,
    }
    repo.meta.flush_journal()
    with repo.meta.read() as conn:
        behind = db_behind(repo, conn)
    if behind:
        raise IntegrityError(
            f"gc refused: the metadata DB lacks {len(behind)} journal event(s) of the store, so "
            f"it is older than the store and would take versions for garbage; {REBUILD}"
        )
    holder = _take_lease(repo)
    try:
        _sweep(repo, report, dry_run)
        _rewrite(repo, report, dry_run)
        _unindexed(repo, report, dry_run, grace)
    finally:
        _release_lease(repo, holder)
    return report


# -- lease -----------------------------------------------------------------------------------
def _started(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot; "" where /proc is missing): with
    the pid it names a process for good, since pids are reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def _take_lease(repo: Repository) -> str:
    me = os.getpid()
    holder = f"{os.uname().nodename}:{me}:{_started(me)}:{uuid.uuid4().hex[:8]}"
    now = time.time()
    with repo.meta.write() as conn:
        row = conn.execute(sa.select(leases_t).where(leases_t.c.name == "gc")).first()
        if row is not None and row.expires > now and not _dead_here(row.holder):
            raise ConflictError(f"another gc is running ({row.holder}); try again later")
        conn.execute(leases_t.delete().where(leases_t.c.name == "gc"))
        conn.execute(leases_t.insert().values(name="gc", holder=holder, expires=now + LEASE))
    return holder


def _dead_here(holder: str) -> bool:
    """Whether a lease's holder was a process on this host that no longer runs (a gc killed
    mid-way must not block the next one for the lease's whole hour)."""
    host, pid, started, *_rest = [*holder.split(":"), "", "", ""]
    if host != os.uname().nodename or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return bool(started) and _started(int(pid)) not in ("", started)  # the pid was reused


def _release_lease(repo: Repository, holder: str) -> None:
    with contextlib.suppress(Exception), repo.meta.write() as conn:
        conn.execute(leases_t.delete().where(leases_t.c.holder == holder))


# -- 3. mark, recompute, sweep ---------------------------------------------------------------
def _sweep(repo: Repository, report: dict[str, Any], dry_run: bool) -> None:
    c = chunks_t.c
    with repo.meta.read() as conn:
        live_manifests, live = repo.live_objects(conn)
        indexed = {r[0] for r in conn.execute(sa.select(c.id))}
        manifests = {r[0] for r in conn.execute(sa.select(s.manifests.c.id))}
        in_flight = _uploaded_meanwhile(conn)
    dead = sorted(indexed - live - in_flight)
    dead_manifests = sorted(manifests - live_manifests)
    if dry_run:
        report["chunks_removed"] = len(dead)
        report["manifests_removed"] = len(dead_manifests)
        return
    now = time.time()
    with repo.meta.write() as conn:
        for i in range(0, len(dead), 500):
            _lock_rows(conn, dead[i : i + 500])
            conn.execute(
                chunks_t.update()
                .where(c.id.in_(dead[i : i + 500]), c.dead_since.is_(None))
                .values(dead_since=now)
            )
    with repo.meta.read() as conn:
        live_manifests, live = repo.live_objects(conn)
    doomed = [cid for cid in dead if cid not in live]
    with repo.meta.write() as conn:
        for i in range(0, len(doomed), 500):
            _lock_rows(conn, doomed[i : i + 500])
            report["chunks_removed"] += conn.execute(
                chunks_t.delete().where(c.id.in_(doomed[i : i + 500]), c.dead_since.is_not(None))
            ).rowcount
        f, m = s.version_files.c, s.manifests.c
        unused = [mid for mid in dead_manifests if mid not in live_manifests]
        for i in range(0, len(unused), 500):
            batch = unused[i : i + 500]
            # Locked first (id order), checked after: a writer recording a version that uses
            # one holds it (Metadata.keep_manifests) until it commits, and this statement's
            # fresh snapshot then sees the reference (PostgreSQL; SQLite's writes exclude).
            conn.execute(sa.select(m.id).where(m.id.in_(batch)).order_by(m.id).with_for_update())
            used = sa.select(f.manifest_id).where(f.manifest_id == m.id).exists()
            report["manifests_removed"] += conn.execute(
                s.manifests.delete().where(m.id.in_(batch), ~used)
            ).rowcount
    for mid in unused:
        repo._manifest_cache.pop(mid, None)


def _lock_rows(conn: sa.Connection, ids: list[str]) -> None:
    """Lock chunk rows in id order (PostgreSQL; a no-op on SQLite, whose write transactions
    are exclusive): writers claim theirs in the same order, so neither waits for the other
    in a cycle."""
    c = chunks_t.c
    conn.execute(sa.select(c.id).where(c.id.in_(ids)).order_by(c.id).with_for_update()).all()


def _uploaded_meanwhile(conn: sa.Connection) -> set[str]:
    """Objects indexed since the oldest live upload lease began: a push indexes each pack as it
    arrives and records the versions that use them only at its end, so until then they are
    live for gc (a killed push's lease expires, and then they are garbage like any other)."""
    now = time.time()
    started = conn.execute(
        sa.select(sa.func.min(uploads_t.c.started)).where(uploads_t.c.expires > now)
    ).scalar()
    if started is None:
        return set()
    c, p = chunks_t.c, packs_t.c
    q = sa.select(c.id).join_from(chunks_t, packs_t, c.pack_id == p.id)
    return {r[0] for r in conn.execute(q.where(p.created >= started - 60))}


# -- 4. rewrite, then retire -----------------------------------------------------------------
def _overhead(n: int) -> int:
    return len(MAGIC) + n * (ENTRY.size + TRAILER_ROW.size) + FOOTER.size


def _rewrite(repo: Repository, report: dict[str, Any], dry_run: bool) -> None:
    c, p = chunks_t.c, packs_t.c
    backend = repo.store.backend
    with repo.meta.read() as conn:
        packs = {row.id: row for row in conn.execute(sa.select(packs_t))}
        rows: dict[int, list[Any]] = {pid: [] for pid in packs}
        for row in conn.execute(sa.select(chunks_t).order_by(c.pack_id, c.offset)):
            rows.setdefault(row.pack_id, []).append(row)
    empty, rewrite, small = [], [], []
    for pid, pack in packs.items():
        live = rows.get(pid, [])
        if pack.retired is not None or not live:
            empty.append(pack)
            continue
        used = sum(r.stored_len for r in live) + _overhead(len(live))
        garbage = pack.size - used
        if garbage > 0 and (pack.size < SMALL_PACK or garbage * 10 >= pack.size):
            rewrite.append(pack)
        elif pack.size < SMALL_PACK:
            small.append(pack)
    if len(small) + len(rewrite) >= 2 or rewrite:
        rewrite += small  # consolidate the small ones with what is rewritten anyway
    for pack in empty:
        report["packs_removed"] += 1
        report["bytes_freed"] += pack.size
    if dry_run:
        report["packs_rewritten"] = len(rewrite)
        report["bytes_freed"] += sum(
            max(
                0,
                pk.size
                - sum(r.stored_len for r in rows.get(pk.id, []))
                - _overhead(len(rows.get(pk.id, []))),
            )
            for pk in rewrite
        )
        return
    # Copy live entries of the rewritten packs into new packs (≤ 64 MiB each).
    moved: list[tuple[Any, str, Any]] = []  # (old row, new pack name, new entry)
    new_packs: list[tuple[str, PackWriter]] = []
    writer: PackWriter | None = None
    try:
        for pack in rewrite:
            for r in rows[pack.id]:
                payload = backend.get(pack.name, r.offset, r.stored_len)
                if writer is None:
                    writer = PackWriter(repo.store.staging)
                entry = writer.add(
                    r.id, payload, r.raw_len, r.codec, r.base, r.depth, r.plain_len, r.kind
                )
                moved.append((r, "", entry))
                if writer.size >= 64 * 1024 * 1024:
                    new_packs.append(_finish(repo, writer))
                    writer = None
        if writer is not None:
            new_packs.append(_finish(repo, writer))
            writer = None
    except BaseException:
        if writer is not None:
            writer.discard()
        for name, _w in new_packs:
            with contextlib.suppress(StorageError):
                backend.delete(name)
        raise
    by_entry = {id(e): name for name, w in new_packs for e in w.entries}
    now = time.time()
    with repo.meta.write() as conn:
        # Lock order, as every writer: pack rows, then chunk rows by id (PostgreSQL).
        old = sorted(pk.id for pk in rewrite + empty)
        for i in range(0, len(old), 500):
            conn.execute(
                sa.select(p.id).where(p.id.in_(old[i : i + 500])).order_by(p.id).with_for_update()
            ).all()
        ids_moved = sorted({r.id for r, _n, _e in moved})
        for i in range(0, len(ids_moved), 500):
            _lock_rows(conn, ids_moved[i : i + 500])
        ids: dict[str, int] = {}
        for name, w in new_packs:
            ids[name] = conn.execute(
                packs_t.insert().values(name=name, size=w.size, created=now)
            ).inserted_primary_key[0]
        for r, _n, entry in moved:
            conn.execute(
                chunks_t.update()
                .where(c.id == r.id, c.pack_id == r.pack_id, c.offset == r.offset)
                .values(pack_id=ids[by_entry[id(entry)]], offset=entry.offset)
            )
        # Retire only packs that no row points at now. A receiver indexing an identical
        # pack (same bytes, same name) into the existing row since the snapshot above
        # (remote.objects.receive_pack) added rows: that pack stays. Pack rows are locked
        # first, so such a receiver either commits before (and its rows are seen here) or
        # finds the pack retired (and sends it again once this gc is done).
        pointed = (
            {r[0] for r in conn.execute(sa.select(c.pack_id).where(c.pack_id.in_(old)).distinct())}
            if old
            else set()
        )
        old = [pid for pid in old if pid not in pointed]
        for i in range(0, len(old), 500):
            conn.execute(packs_t.update().where(p.id.in_(old[i : i + 500])).values(retired=now))
    kept = {pk.id for pk in rewrite + empty} - set(old)
    rewrite = [pk for pk in rewrite if pk.id not in kept]
    empty = [pk for pk in empty if pk.id not in kept]
    for pack in rewrite + empty:
        with contextlib.suppress(StorageError):
            backend.delete(pack.name)
    report["packs_rewritten"] += len(rewrite)
    report["bytes_freed"] += sum(pk.size for pk in rewrite) - sum(w.size for _n, w in new_packs)
    # Retired rows whose files are gone are history nobody needs.
    with repo.meta.write() as conn:
        gone = [pk.id for pk in rewrite + empty]
        still = (
            {r[0] for r in conn.execute(sa.select(c.pack_id).where(c.pack_id.in_(gone)).distinct())}
            if gone
            else set()
        )
        drop = [pid for pid in gone if pid not in still]
        for i in range(0, len(drop), 500):
            conn.execute(packs_t.delete().where(p.id.in_(drop[i : i + 500])))


def _finish(repo: Repository, writer: PackWriter) -> tuple[str, PackWriter]:
    name = pack_object_name(writer.finish())
    repo.store.backend.put(name, writer.path)
    with contextlib.suppress(OSError):
        os.unlink(writer.path)
    return name, writer


# -- 5. unindexed packs and staging files ----------------------------------------------------
def _unindexed(repo: Repository, report: dict[str, Any], dry_run: bool, grace: float) -> None:
    backend = repo.store.backend
    now = time.time()
    with repo.meta.read() as conn:
        indexed = {r[0] for r in conn.execute(sa.select(packs_t.c.name))}
        live = (
            conn.execute(sa.select(uploads_t.c.started).where(uploads_t.c.expires > now))
            .scalars()
            .all()
        )
    oldest_upload = min(live) if live else None

    def collectable(mtime: float) -> bool:
        if now - mtime < grace:
            return False
        # An upload that started before the object was written may be about to index it.
        return oldest_upload is None or mtime < oldest_upload - 60

    with repo.meta.read() as conn:
        versions = set(conn.execute(sa.select(s.versions.c.id)).scalars())
    for name in list(backend.list("packs/")):
        if name in indexed:
            continue
        try:
            mtime, size = backend.mtime(name), backend.size(name)
            if not collectable(mtime):
                continue
            held = [
                e.id
                for e in read_pack_index(backend, name)
                if e.kind == Kind.VERSION and e.id not in versions
            ]
        except IntegrityError:
            held = []  # not a pack at all (a rebuild could not read it either): garbage
        except StorageError:
            continue  # the backend failed: look again next time
        if held:
            # A commit that died between its last pack and its transaction: the version is
            # whole in the store. Never deleted here; `fsck --rebuild-index` recovers it.
            report["kept_unindexed"] = report.get("kept_unindexed", 0) + 1
            continue
        report["unindexed_packs"] += 1
        report["bytes_freed"] += size
        if not dry_run:
            backend.delete(name)
    staging = repo.store.staging
    temps = [p for p in staging.iterdir() if p.is_file()] if staging.exists() else []
    temps += backend.temp_files() if hasattr(backend, "temp_files") else []
    for path in temps:
        try:
            if not collectable(path.stat().st_mtime):
                continue
        except OSError:
            continue
        report["temp_files"] += 1
        if not dry_run:
            with contextlib.suppress(OSError):
                os.unlink(path)
