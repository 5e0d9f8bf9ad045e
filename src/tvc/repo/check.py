"""``fsck`` and ``gc``: the repository's invariants, verified and enforced.

fsck checks exactly what the store and repo promise (see :mod:`tvc.store` and :mod:`tvc.repo`):
every indexed pack exists with its recorded size, every chunk lies inside its pack and its delta
base is indexed, every manifest hashes to its name and names only indexed chunks, every version
hashes to its id and its refs and parents exist. ``read_data`` additionally reads every pack,
checks it hashes to its name and decodes every chunk. gc removes what no version uses: unindexed
packs (crash leftovers), chunks, manifests, and staging files.
"""

from __future__ import annotations

import collections
import contextlib
import os
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tvc.errors import IntegrityError, StorageError
from tvc.repo import schema as s
from tvc.repo.version import version_id
from tvc.store import codecs, hashing
from tvc.store.chunkstore import MAX_DELTA_DEPTH
from tvc.store.index import chunks as chunks_t
from tvc.store.index import packs as packs_t
from tvc.store.packs import PackWriter, digest_of_object_name, iter_entries, pack_object_name

if TYPE_CHECKING:
    from tvc.repo.repository import Progress, Repository


def _users_of(repo: Repository, conn: sa.Connection, cids: set[str]) -> dict[str, list[str]]:
    """chunk id → ["model@vN:path", …] for the versions whose files use it."""
    users: dict[str, list[str]] = collections.defaultdict(list)
    f, v, mo = s.version_files.c, s.versions.c, s.models.c
    q = (
        sa.select(mo.name, v.number, f.path, f.manifest_id)
        .join_from(s.version_files, s.versions, f.version_id == v.id)
        .join(s.models, v.model_id == mo.id)
    )
    for model, number, path, mid in conn.execute(q):
        for cid, _n in repo.manifest(mid).chunks:
            if cid in cids:
                users[cid].append(f"{model}@v{number}:{path}")
    return users


def check(repo: Repository, *, read_data: bool, progress: Progress) -> dict[str, Any]:
    errors: list[str] = []
    warnings: list[str] = []
    bad_chunks: set[str] = set()
    backend = repo.store.backend
    with repo.engine.connect() as conn:
        packs = {row.id: row for row in conn.execute(sa.select(packs_t))}
        pack_sizes: dict[int, int] = {}
        for pid, row in packs.items():
            try:
                pack_sizes[pid] = backend.size(row.name)
            except StorageError:
                errors.append(f"pack {row.name} is indexed but missing")
                continue
            if pack_sizes[pid] != row.size:
                errors.append(f"pack {row.name}: size {pack_sizes[pid]}, index says {row.size}")
        indexed_names = {row.name for row in packs.values()}
        for name in backend.list("packs/"):
            if name not in indexed_names:
                warnings.append(f"pack {name} is not indexed (left by an interrupted write; gc)")

        chunk_rows = {row.id: row for row in conn.execute(sa.select(chunks_t))}
        for cid, row in chunk_rows.items():
            size = pack_sizes.get(row.pack_id)
            if size is not None and row.offset + row.stored_len > size:
                errors.append(f"chunk {cid} lies past the end of its pack")
                bad_chunks.add(cid)
            if row.base and row.base not in chunk_rows:
                errors.append(f"chunk {cid}: delta base {row.base} is not indexed")
                bad_chunks.add(cid)
            if row.depth > MAX_DELTA_DEPTH:
                errors.append(f"chunk {cid}: delta chain {row.depth} > {MAX_DELTA_DEPTH}")

        manifest_ids = [r[0] for r in conn.execute(sa.select(s.manifests.c.id))]
        for mid in manifest_ids:
            try:
                m = repo.manifest(mid)
            except IntegrityError as exc:
                errors.append(str(exc))
                continue
            if sum(n for _c, n in m.chunks) != m.size:
                errors.append(f"manifest {mid}: chunks do not add up to the file size")
            for cid, n in m.chunks:
                row = chunk_rows.get(cid)
                if row is None:
                    errors.append(f"manifest {mid}: chunk {cid} is not indexed")
                    bad_chunks.add(cid)
                elif row.raw_len != n:
                    errors.append(f"manifest {mid}: chunk {cid} length {n} != {row.raw_len}")

        known_manifests = set(manifest_ids)
        version_ids = [r[0] for r in conn.execute(sa.select(s.versions.c.id))]
        for vid in version_ids:
            v = repo._load_version(conn, vid)
            for fe in v.files:
                if fe.manifest_id not in known_manifests:
                    errors.append(f"{v.ref}:{fe.path}: manifest {fe.manifest_id} missing")
            recomputed = version_id(
                model=v.model,
                parents=list(v.parents),
                files=list(v.files),
                message=v.message,
                author=v.author,
                created=v.created,
                params=v.params,
                metrics=_committed_metrics(conn, v),
                datasets=v.datasets,
                code=v.code,
                base=v.base,
            )
            if recomputed != vid:
                errors.append(f"{v.ref}: metadata does not hash to its id {vid[:12]}")
        for (vid,) in conn.execute(sa.select(s.refs.c.version_id)):
            if vid not in version_ids:
                errors.append(f"a ref points to missing version {vid}")

        checked = {
            "packs": len(packs),
            "chunks": len(chunk_rows),
            "manifests": len(manifest_ids),
            "versions": len(version_ids),
            "bytes_read": 0,
        }
        if read_data:
            total = sum(row.size for row in packs.values())
            progress.start("fsck", total)
            known = repo.store.infos(chunk_rows)  # delta bases resolve without a query each
            try:
                for pid, row in packs.items():
                    if pid not in pack_sizes:
                        continue
                    n = _read_pack(repo, row, chunk_rows, known, errors, bad_chunks)
                    checked["bytes_read"] += n
                    progress.advance(row.size)
            finally:
                progress.finish()
        if bad_chunks:
            users = _users_of(repo, conn, bad_chunks)
            for cid in sorted(bad_chunks):
                if users.get(cid):
                    errors.append(f"chunk {cid} is used by {', '.join(sorted(users[cid]))}")
    return {"ok": not errors, "errors": errors, "warnings": warnings, "checked": checked}


def _committed_metrics(conn: sa.Connection, v) -> dict:
    """The metrics as committed: the ``versions.metrics`` column, which never changes (metrics
    added after the commit live elsewhere and are not part of the id)."""
    q = sa.select(s.versions.c.metrics).where(s.versions.c.id == v.id)
    return conn.execute(q).scalar() or {}


def _read_pack(repo, row, chunk_rows, known, errors: list[str], bad: set[str]) -> int:
    try:
        blob = repo.store.backend.get(row.name)
    except StorageError as exc:
        errors.append(f"pack {row.name}: {exc}")
        return 0
    if hashing.digest(blob) != digest_of_object_name(row.name):
        errors.append(f"pack {row.name}: content does not hash to its name")
    seen = 0
    try:
        for entry, payload in iter_entries(blob, row.name):
            idx = chunk_rows.get(entry.id)
            if idx is None or idx.pack_id != row.id or idx.offset != entry.offset:
                continue  # an unindexed copy (e.g. a repack leftover); gc's business
            seen += 1
            try:
                base = repo.store.read(entry.base, None, known) if entry.base else None
                raw = codecs.decode(entry.codec, payload, entry.raw_len, base=base)
                ok = hashing.digest(raw) == entry.id
            except IntegrityError:
                ok = False
            if not ok:
                errors.append(f"chunk {entry.id} in pack {row.name} is corrupt")
                bad.add(entry.id)
    except IntegrityError as exc:
        errors.append(str(exc))
    expected = sum(1 for c in chunk_rows.values() if c.pack_id == row.id)
    if seen != expected:
        errors.append(f"pack {row.name}: {expected - seen} indexed chunks not found in the pack")
        for cid, c in chunk_rows.items():
            if c.pack_id == row.id:
                bad.add(cid)
    return len(blob)


def collect_garbage(repo: Repository, *, dry_run: bool) -> dict[str, Any]:
    """Remove what no version uses. The caller holds the writer lock."""
    backend = repo.store.backend
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
    with repo.engine.connect() as conn:
        live_manifests, live_chunks = repo._reachable(conn)
        packs = {row.id: row for row in conn.execute(sa.select(packs_t))}
        by_pack: dict[int, list] = collections.defaultdict(list)
        for row in conn.execute(sa.select(chunks_t)):
            by_pack[row.pack_id].append(row)
        all_manifests = {r[0] for r in conn.execute(sa.select(s.manifests.c.id))}
    dead_manifests = all_manifests - live_manifests
    report["manifests_removed"] = len(dead_manifests)

    indexed = {row.name for row in packs.values()}
    orphans = [n for n in backend.list("packs/") if n not in indexed]
    report["unindexed_packs"] = len(orphans)
    for name in orphans:
        report["bytes_freed"] += backend.size(name)
    temps = list(repo.store.staging.glob("*")) if repo.store.staging.exists() else []
    temps += backend.temp_files() if hasattr(backend, "temp_files") else []
    report["temp_files"] = len(temps)

    plans = []  # (pack row, live rows, dead rows)
    for pid, row in packs.items():
        rows = by_pack.get(pid, [])
        live = [r for r in rows if r.id in live_chunks]
        dead = [r for r in rows if r.id not in live_chunks]
        if dead or not rows:
            plans.append((row, live, dead))
            report["chunks_removed"] += len(dead)
            report["bytes_freed"] += sum(r.stored_len for r in dead) + (
                0 if live else row.size - sum(r.stored_len for r in dead)
            )
            report["packs_removed" if not live else "packs_rewritten"] += 1
    if dry_run:
        return report

    for name in orphans:
        backend.delete(name)
    for p in temps:
        with contextlib.suppress(OSError):
            os.unlink(p)
    for row, live, dead in plans:
        new_name = None
        if live:
            writer = PackWriter(repo.store.staging)
            try:
                for r in live:
                    payload = backend.get(row.name, r.offset, r.stored_len)
                    writer.add(r.id, payload, r.raw_len, r.codec, r.base, r.depth, r.plain_len)
                new_name = pack_object_name(writer.finish())
                backend.put(new_name, writer.path)
            except BaseException:
                writer.discard()
                raise
        with repo.engine.begin() as conn:
            if live:
                new_id = conn.execute(
                    packs_t.insert().values(name=new_name, size=writer.size, created=row.created)
                ).inserted_primary_key[0]
                for entry in writer.entries:
                    conn.execute(
                        chunks_t.update()
                        .where(chunks_t.c.id == entry.id)
                        .values(pack_id=new_id, offset=entry.offset)
                    )
            dead_ids = [r.id for r in dead]
            for i in range(0, len(dead_ids), 500):
                conn.execute(chunks_t.delete().where(chunks_t.c.id.in_(dead_ids[i : i + 500])))
            conn.execute(packs_t.delete().where(packs_t.c.id == row.id))
        backend.delete(row.name)
    if dead_manifests:
        with repo.engine.begin() as conn:
            ids = list(dead_manifests)
            for i in range(0, len(ids), 500):
                conn.execute(s.manifests.delete().where(s.manifests.c.id.in_(ids[i : i + 500])))
    return report
