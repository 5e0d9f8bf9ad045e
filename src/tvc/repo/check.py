"""``fsck``: the repository's invariants, verified — and the DB checked against the store.

fsck checks exactly what the store and repo promise (see :mod:`tvc.store` and :mod:`tvc.repo`):
every indexed pack exists with its recorded size, every chunk lies inside its pack and its delta
base is indexed, every manifest hashes to its name and names only indexed chunks, every live
version hashes to its id and its records are in the store, refs point at live versions.
``read_data`` additionally reads every pack, checks it hashes to its name and decodes every
entry.

Because the DB is an index over the store, fsck also asks whether the DB is *behind* the store:
journal events in the store that the DB never recorded (a restored backup), or packs holding
versions the DB does not know that the journal says were committed. That is an error naming
the rebuild (`tvc fsck --rebuild-index`) — never advice for gc, which would delete them.

fsck runs beside writers and gc: it reads one snapshot of the DB, and anything that looks
wrong (a pack gone, a chunk elsewhere) is checked again against the current index before it
is reported, so a pack that gc rewrote meanwhile is no error.
"""

from __future__ import annotations

import collections
import json
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tvc.errors import IntegrityError, StorageError
from tvc.repo import schema as s
from tvc.repo.meta import JOURNAL_PREFIX
from tvc.repo.version import version_id
from tvc.store import codecs, hashing
from tvc.store.chunkstore import MAX_DELTA_DEPTH
from tvc.store.index import chunks as chunks_t
from tvc.store.index import packs as packs_t
from tvc.store.index import uploads as uploads_t
from tvc.store.packs import Kind, digest_of_object_name, iter_entries, read_pack_index

if TYPE_CHECKING:
    from tvc.repo.repository import Progress, Repository

REBUILD = "run `tvc fsck --rebuild-index` to rebuild the DB from the store"
GRACE = 3600.0  # seconds an unindexed pack may be a write in flight (see repo.gc)


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


def store_journal(repo: Repository) -> list[str]:
    """Names of the journal events in the store."""
    return sorted(repo.store.backend.list(JOURNAL_PREFIX))


def db_behind(repo: Repository, conn: sa.Connection) -> list[str]:
    """Journal events the store holds and the DB never recorded: the DB is older than the
    store (a restored backup, or a DB that was replaced).

    The store is listed *before* the DB is read: an event reaches the store only after its
    transaction committed, so a read that follows the listing knows every event listed. The
    other order takes a writer on another replica that commits in between for a DB behind.
    (``conn`` must not have read anything yet: its snapshot would be older than the listing.)
    """
    in_store = store_journal(repo)
    known = {r[0] for r in conn.execute(sa.select(s.journal.c.name))}
    return [n for n in in_store if n not in known]


def unindexed_records(
    repo: Repository, conn: sa.Connection, indexed: set[str]
) -> dict[str, tuple[float, list[str]]]:
    """Unindexed packs → (their age in seconds, ids of version records the DB lacks)."""
    backend = repo.store.backend
    versions = {r[0] for r in conn.execute(sa.select(s.versions.c.id))}
    out = {}
    now = time.time()
    for name in backend.list("packs/"):
        if name in indexed:
            continue
        try:
            age = now - backend.mtime(name)
            entries = read_pack_index(backend, name)
        except (StorageError, IntegrityError):
            out[name] = (0.0, [])
            continue
        out[name] = (
            age,
            [e.id for e in entries if e.kind == Kind.VERSION and e.id not in versions],
        )
    return out


def check(repo: Repository, *, read_data: bool, repair: bool, progress: Progress) -> dict[str, Any]:
    errors: list[str] = []
    warnings: list[str] = []
    bad_chunks: set[str] = set()
    repair = repair and not getattr(repo, "read_only", False)
    # (kind, pack name or chunk id, message): confirmed against the current index at the end
    suspects: list[tuple[str, str, str]] = []
    backend = repo.store.backend
    flushed = repo.meta.flush_journal()
    if flushed:
        warnings.append(f"wrote {flushed} journal event(s) an interrupted command had left")
    with repo.meta.read() as conn:
        behind = db_behind(repo, conn)
        if behind:
            errors.append(
                f"the metadata DB is older than the store: it lacks {len(behind)} journal "
                f"event(s) (the newest {behind[-1].removeprefix(JOURNAL_PREFIX)}); do not gc; "
                + REBUILD
            )
        packs = {row.id: row for row in conn.execute(sa.select(packs_t))}
        pack_sizes: dict[int, int] = {}
        for pid, row in packs.items():
            try:
                pack_sizes[pid] = backend.size(row.name)
            except StorageError:
                if row.retired is None:
                    suspects.append(
                        ("missing", row.name, f"pack {row.name} is indexed but missing")
                    )
                continue
            if pack_sizes[pid] != row.size:
                errors.append(f"pack {row.name}: size {pack_sizes[pid]}, index says {row.size}")
        indexed_names = {row.name for row in packs.values()}
        live_uploads = conn.execute(
            sa.select(sa.func.count()).where(uploads_t.c.expires > time.time())
        ).scalar()
        for name, (age, lacking) in unindexed_records(repo, conn, indexed_names).items():
            if lacking and behind:
                errors.append(
                    f"pack {name} holds {len(lacking)} version(s) the DB lacks; " + REBUILD
                )
            elif lacking and age > GRACE and not live_uploads:
                warnings.append(
                    f"pack {name} holds {len(lacking)} version(s) the DB lacks (a commit that "
                    "died before its transaction); gc keeps it, " + REBUILD + " to recover them"
                )
            elif age > GRACE and not live_uploads:
                warnings.append(f"pack {name} is not indexed (left by an interrupted write; gc)")

        chunk_rows = {row.id: row for row in conn.execute(sa.select(chunks_t))}
        for cid, row in chunk_rows.items():
            size = pack_sizes.get(row.pack_id)
            if size is not None and row.offset + row.stored_len > size:
                errors.append(f"chunk {cid} lies past the end of its pack")
                bad_chunks.add(cid)
            if row.pack_id not in pack_sizes and row.pack_id in packs:
                bad_chunks.add(cid)
            if row.base and row.base not in chunk_rows:
                errors.append(f"chunk {cid}: delta base {row.base} is not indexed")
                bad_chunks.add(cid)
            if row.depth > MAX_DELTA_DEPTH:
                errors.append(f"chunk {cid}: delta chain {row.depth} > {MAX_DELTA_DEPTH}")
            if row.damaged:
                bad_chunks.add(cid)

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
                    suspects.append(("chunk", cid, f"manifest {mid}: chunk {cid} is not indexed"))
                elif row.raw_len != n:
                    errors.append(f"manifest {mid}: chunk {cid} length {n} != {row.raw_len}")

        known_manifests = set(manifest_ids)
        rows = conn.execute(
            sa.select(s.versions.c.id, s.versions.c.metrics).where(s.versions.c.deleted.is_(None))
        ).all()
        version_ids = {vid for vid, _m in rows}
        unrecorded = 0
        for vid, committed in rows:
            v = repo.meta.load_version(conn, vid)
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
                metrics=committed or {},
                datasets=v.datasets,
                code=v.code,
                base=v.base,
            )
            if recomputed != vid:
                errors.append(f"{v.ref}: metadata does not hash to its id {vid[:12]}")
            if vid not in chunk_rows:
                unrecorded += 1
        if unrecorded:
            warnings.append(
                f"{unrecorded} version record(s) are only in the DB (committed by an older tvc): "
                "a rebuild could not restore them"
            )
        for (vid,) in conn.execute(sa.select(s.refs.c.version_id)):
            if vid not in version_ids:
                errors.append(f"a ref points to a missing or deleted version {vid}")

        checked = {
            "packs": len(packs),
            "chunks": len(chunk_rows),
            "manifests": len(manifest_ids),
            "versions": len(version_ids),
            "bytes_read": 0,
        }
        if read_data:
            total = sum(row.size for pid, row in packs.items() if pid in pack_sizes)
            progress.start("fsck", total)
            known = repo.store.infos(chunk_rows)  # delta bases resolve without a query each
            try:
                for pid, row in packs.items():
                    if pid not in pack_sizes:
                        continue
                    n = _read_pack(repo, row, chunk_rows, known, suspects, bad_chunks)
                    checked["bytes_read"] += n
                    progress.advance(row.size)
            finally:
                progress.finish()
    confirmed = _confirmed(repo, suspects, bad_chunks)
    bad_chunks = _still_bad(repo, bad_chunks)
    if repair and bad_chunks:
        restored = _restore_records(repo, bad_chunks)
        if restored:
            warnings.append(
                f"wrote {len(restored)} manifest/version record(s) again from the DB "
                "(their stored copies were missing or corrupt)"
            )
            bad_chunks -= restored
    dropped = _drop_empty_missing_packs(repo) if repair else set()
    errors += [e for e in confirmed if not any(name in e for name in dropped)]
    if dropped:
        warnings.append(f"dropped {len(dropped)} lost pack(s) nothing needs any more")
    if bad_chunks:
        with repo.meta.read() as conn:
            users = _users_of(repo, conn, bad_chunks)
        for cid in sorted(bad_chunks):
            used = f"; used by {', '.join(sorted(users[cid]))}" if users.get(cid) else ""
            errors.append(f"chunk {cid} is missing or corrupt{used}")
        if repair:
            with repo.meta.write() as conn:
                ids = sorted(bad_chunks)
                for i in range(0, len(ids), 500):
                    conn.execute(
                        chunks_t.update()
                        .where(chunks_t.c.id.in_(ids[i : i + 500]))
                        .values(damaged=True)
                    )
            errors.append(
                f"marked {len(bad_chunks)} chunk(s) damaged: committing the original files "
                "again stores them anew and repairs every version that uses them"
            )
    return {"ok": not errors, "errors": errors, "warnings": warnings, "checked": checked}


def _confirmed(repo: Repository, suspects: list[tuple[str, str, str]], bad: set[str]) -> list[str]:
    """The suspect findings that still hold against the current index (gc may have moved a
    chunk, or retired a pack, since fsck's snapshot)."""
    if not suspects:
        return []
    out = []
    with repo.meta.read() as conn:
        live_packs = {
            r[0] for r in conn.execute(sa.select(packs_t.c.name).where(packs_t.c.retired.is_(None)))
        }
        for kind, what, message in suspects:
            if kind == "chunk":
                if repo.store.info(what) is None:
                    out.append(message)
                    bad.add(what)
            elif what in live_packs and (kind == "damaged" or not repo.store.backend.exists(what)):
                out.append(message)
                pid = conn.execute(sa.select(packs_t.c.id).where(packs_t.c.name == what)).scalar()
                bad.update(
                    r[0]
                    for r in conn.execute(sa.select(chunks_t.c.id).where(chunks_t.c.pack_id == pid))
                )
    return out


def _restore_records(repo: Repository, bad: set[str]) -> set[str]:
    """Store again the manifest and version records among ``bad`` that the DB still holds:
    the DB is an index over the store, but while it is intact it can repair the store's copy
    of what it indexes (the inverse of a rebuild)."""
    from tvc.repo.version import version_record

    records: list[tuple[str, Kind, bytes]] = []
    with repo.meta.read() as conn:
        v = s.versions.c
        for rid in sorted(bad):
            kind = conn.execute(sa.select(chunks_t.c.kind).where(chunks_t.c.id == rid)).scalar()
            if kind == Kind.MANIFEST:
                body = conn.execute(
                    sa.select(s.manifests.c.body).where(s.manifests.c.id == rid)
                ).scalar()
                if body is not None:
                    m = repo.manifest(rid)
                    records.append((rid, Kind.MANIFEST, m.canonical()))
            elif kind == Kind.VERSION:
                row = conn.execute(sa.select(v.metrics).where(v.id == rid)).first()
                if row is None:
                    continue
                ver = repo.meta.load_version(conn, rid)
                raw = version_record(
                    model=ver.model,
                    parents=list(ver.parents),
                    files=list(ver.files),
                    message=ver.message,
                    author=ver.author,
                    created=ver.created,
                    params=ver.params,
                    metrics=row.metrics or {},
                    datasets=ver.datasets,
                    code=ver.code,
                    base=ver.base,
                )
                records.append((rid, Kind.VERSION, raw))
    if not records:
        return set()
    session = repo.store.session()
    try:
        done = set()
        for rid, kind, raw in records:
            session.healed.add(rid)
            session.force.add(rid)
            if session.put_record(kind, raw) == rid:
                done.add(rid)
        session.flush()
        with repo.meta.write() as conn:
            session.index_into(conn)
    except BaseException:
        session.abort()
        raise
    finally:
        session.end_lease()
    return done


def _drop_empty_missing_packs(repo: Repository) -> set[str]:
    """Index rows of lost packs that no chunk row points into any more (all healed)."""
    dropped = set()
    with repo.meta.write() as conn:
        for pid, name in conn.execute(sa.select(packs_t.c.id, packs_t.c.name)).all():
            used = conn.execute(
                sa.select(chunks_t.c.id).where(chunks_t.c.pack_id == pid).limit(1)
            ).first()
            if used is None and not repo.store.backend.exists(name):
                conn.execute(packs_t.delete().where(packs_t.c.id == pid))
                dropped.add(name)
    return dropped


def _still_bad(repo: Repository, bad: set[str]) -> set[str]:
    """Drop chunks that are fine now: moved by gc to another pack, or deleted as garbage."""
    if not bad:
        return bad
    infos = repo.store.infos(bad, with_bases=True)
    out = set()
    for cid in bad:
        info = infos.get(cid)
        if info is None:
            continue  # gone from the index: gc took it (unreferenced), not damage
        try:
            repo.store.read(cid, info, infos)
        except (IntegrityError, StorageError):
            out.add(cid)
    return out


def _read_pack(repo, row, chunk_rows, known, suspects, bad: set[str]) -> int:
    try:
        blob = repo.store.backend.get(row.name)
    except StorageError as exc:
        suspects.append(("missing", row.name, f"pack {row.name}: {exc}"))
        return 0
    if hashing.digest(blob) != digest_of_object_name(row.name):
        suspects.append(
            ("damaged", row.name, f"pack {row.name}: content does not hash to its name")
        )
        for cid, c in chunk_rows.items():
            if c.pack_id == row.id:
                bad.add(cid)
    seen = 0
    try:
        for entry, payload in iter_entries(blob, row.name):
            idx = chunk_rows.get(entry.id)
            if idx is None or idx.pack_id != row.id or idx.offset != entry.offset:
                continue  # an unindexed copy (a duplicate of a concurrent writer); gc's business
            seen += 1
            try:
                base = repo.store.read(entry.base, None, known) if entry.base else None
                raw = codecs.decode(entry.codec, payload, entry.raw_len, base=base)
                ok = hashing.digest(raw) == entry.id
            except IntegrityError:
                ok = False
            if not ok:
                bad.add(entry.id)
    except IntegrityError:
        pass
    expected = sum(1 for c in chunk_rows.values() if c.pack_id == row.id)
    if seen != expected:
        for cid, c in chunk_rows.items():
            if c.pack_id == row.id:
                bad.add(cid)
    return len(blob)


def parse_event(raw: bytes, name: str) -> dict[str, Any]:
    try:
        event = json.loads(raw)
        if not isinstance(event, dict) or "type" not in event:
            raise ValueError("not an event")
        return event
    except ValueError as exc:
        raise IntegrityError(f"journal event {name} is malformed ({exc})") from exc
