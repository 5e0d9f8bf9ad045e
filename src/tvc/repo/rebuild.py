"""``tvc fsck --rebuild-index``: a new metadata DB from the store alone.

What the store holds, and so what a rebuild restores (as restic's ``rebuild-index`` or borg's
``check --repair``):
- the chunk index, from every pack's trailer (one ranged read per pack);
- every manifest and version record, kept in packs like chunks;
- the journal, replayed in time order: version numbers, branch heads, tags, aliases with their
  history and rollback marks, lifecycle states with their audit log, metrics added later,
  deletions.

What it cannot restore: anything a command did after its DB transaction committed but before
its journal event reached the store, if the DB was then lost too (the outbox of that one DB
is gone); versions committed by a tvc older than the journal (fsck warns about those records).
A version whose record is in the store but that no journal event numbers (a commit that was
killed between writing its packs and its transaction) is restored as *recovered*: numbered
after the model's other versions, on no branch, and listed in the report.

SQLite: the new DB is built beside the old one and renamed over it (the old one is kept as
``tvc.db.before-rebuild-<time>``), so a failed rebuild changes nothing. PostgreSQL: every
table is emptied and refilled in one transaction. Run it with no other tvc process using the
registry.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tvc.errors import IntegrityError, StorageError
from tvc.repo import db
from tvc.repo import schema as s
from tvc.repo.check import parse_event, store_journal
from tvc.repo.manifest import Manifest
from tvc.repo.meta import Metadata
from tvc.repo.version import FileEntry, parse_version_record
from tvc.store import hashing
from tvc.store.chunkstore import ChunkInfo, ChunkStore, entry_row
from tvc.store.index import chunks as chunks_t
from tvc.store.index import metadata
from tvc.store.index import packs as packs_t
from tvc.store.packs import Kind, read_pack_index

if TYPE_CHECKING:
    from tvc.repo.repository import Progress, Repository


def rebuild(repo: Repository, progress: Progress) -> dict[str, Any]:
    backend = repo.store.backend
    report: dict[str, Any] = {
        "packs": 0,
        "chunks": 0,
        "manifests": 0,
        "versions": 0,
        "events": 0,
        "recovered": [],
        "renumbered": [],
        "unreadable": [],
    }
    names = sorted(backend.list("packs/"))
    progress.start("rebuild", len(names))
    indexes = {}
    try:
        for name in names:
            try:
                indexes[name] = read_pack_index(backend, name)
            except (IntegrityError, StorageError) as exc:
                report["unreadable"].append(f"{name}: {exc}")
            progress.advance(1)
    finally:
        progress.finish()
    events = []
    for name in store_journal(repo):
        try:
            events.append((name, parse_event(backend.get(name), name)))
        except (IntegrityError, StorageError) as exc:
            report["unreadable"].append(f"{name}: {exc}")

    dbfile = db.sqlite_path(repo.db_url)
    if dbfile is not None:
        tmp = dbfile.with_name(f"{dbfile.name}.rebuild-{os.getpid()}")
        for p in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        url = f"sqlite:///{tmp}"
    else:
        url = repo.db_url
    engine = db.create_engine(url)
    try:
        db.migrate(engine)
        with engine.connect() as conn:
            conn.execution_options(**{db.WRITE: True})
            with conn.begin():
                if dbfile is None:
                    for table in reversed(metadata.sorted_tables):
                        if table.name != "alembic_version":
                            conn.execute(table.delete())
                _fill(repo, conn, engine, indexes, events, report)
    finally:
        engine.dispose()
    if dbfile is not None:
        if dbfile.exists():
            keep = dbfile.with_name(f"{dbfile.name}.before-rebuild-{int(time.time())}")
            os.replace(dbfile, keep)
            report["previous_db"] = str(keep)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                dbfile.with_name(dbfile.name + suffix).unlink()
        os.replace(tmp, dbfile)
        from tvc.store import durable

        durable.fsync_dir(dbfile.parent)
    return report


def _fill(repo, conn, engine, indexes, events, report) -> None:
    now = time.time()
    # 1. packs and the chunk index (the first copy of an object wins; others are garbage).
    seen: set[str] = set()
    kinds: dict[str, int] = {}
    for name, entries in indexes.items():
        size = repo.store.backend.size(name)
        pid = conn.execute(
            packs_t.insert().values(name=name, size=size, created=now)
        ).inserted_primary_key[0]
        rows = []
        for e in entries:
            if e.id in seen:
                continue
            seen.add(e.id)
            kinds[e.id] = e.kind
            rows.append(entry_row(e, pid))
        for i in range(0, len(rows), 500):
            conn.execute(chunks_t.insert(), rows[i : i + 500])
        report["packs"] += 1
    report["chunks"] = sum(1 for k in kinds.values() if k == Kind.CHUNK)
    store = ChunkStore(repo.store.backend, engine, repo.store.staging)

    def fetch(rid: str) -> bytes:
        info = _info(conn, store, rid)
        return bytes(store.read(rid, info, {rid: info}))

    # 2. manifests.
    manifests: dict[str, Manifest] = {}
    for rid, kind in kinds.items():
        if kind != Kind.MANIFEST:
            continue
        try:
            m = Manifest.from_canonical(fetch(rid), rid)
        except IntegrityError as exc:
            report["unreadable"].append(f"manifest {rid}: {exc}")
            continue
        manifests[rid] = m
        conn.execute(s.manifests.insert().values(id=rid, body=m.encode()))
    report["manifests"] = len(manifests)

    # 3. version records.
    records: dict[str, dict[str, Any]] = {}
    for rid, kind in kinds.items():
        if kind != Kind.VERSION:
            continue
        try:
            records[rid] = parse_version_record(fetch(rid))
        except (IntegrityError, ValueError, KeyError) as exc:
            report["unreadable"].append(f"version {rid}: {exc}")

    # 4. numbers and initial states from the journal's commit events.
    meta = Metadata(engine, repo.store.backend, "rebuild")
    model_ids: dict[str, int] = {}

    def model_id(name: str) -> int:
        if name not in model_ids:
            model_ids[name] = conn.execute(
                s.models.insert().values(name=name, created=now, last_number=0)
            ).inserted_primary_key[0]
        return model_ids[name]

    numbered: dict[str, tuple[int, str]] = {}  # version -> (number, state)
    taken: dict[str, set[int]] = defaultdict(set)
    last: dict[str, int] = defaultdict(int)
    for _name, ev in events:
        if ev.get("type") == "baseline":
            for b in ev["versions"]:
                last[b["model"]] = max(last[b["model"]], int(b["number"]))
                if b["id"] in records and b["id"] not in numbered:
                    taken[b["model"]].add(int(b["number"]))
                    numbered[b["id"]] = (int(b["number"]), b["state"])
            for model, n in ev.get("last_numbers", {}).items():
                last[model] = max(last[model], int(n))
            continue
        if ev.get("type") not in ("commit", "fetched"):  # fetched: recorded on no branch
            continue
        model, vid, number = ev["model"], ev["version"], int(ev["number"])
        last[model] = max(last[model], number)
        if vid not in records or vid in numbered:
            continue
        if number in taken[model]:
            report["renumbered"].append(f"{model}@v{number} ({vid[:12]})")
            number = -1  # after every journaled number; assigned below
        taken[model].add(number)
        numbered[vid] = (number, ev.get("state") or "created")
    for vid, rec in sorted(records.items(), key=lambda kv: kv[1]["created"]):
        model = rec["model"]
        number, state = numbered.get(vid, (-1, "created"))
        if number < 0:
            last[model] += 1
            number = last[model]
            if vid not in numbered:
                report["recovered"].append(f"{model}@v{number} ({vid[:12]})")
            numbered[vid] = (number, state)
    # 5. versions (parents first is not needed: no FK from parents to order on insert).
    inserted: set[str] = set()
    for vid, rec in sorted(records.items(), key=lambda kv: numbered[kv[0]][0]):
        files = []
        ok = True
        for path, mid in rec["files"]:
            m = manifests.get(mid)
            if m is None:
                report["unreadable"].append(f"version {vid[:12]}: manifest {mid} is missing")
                ok = False
                break
            files.append(FileEntry(path, m.size, m.digest, m.format, mid))
        if not ok:
            continue
        number, state = numbered[vid]
        conn.execute(
            s.versions.insert().values(
                id=vid,
                model_id=model_id(rec["model"]),
                number=number,
                state=state,
                size=sum(f.size for f in files),
                message=rec["message"],
                author=rec["author"],
                created=rec["created"],
                params=rec["params"],
                metrics=rec["metrics"],
                datasets=rec["datasets"],
                code=rec["code"],
                base=rec["base"],
            )
        )
        inserted.add(vid)
        if files:
            conn.execute(
                s.version_files.insert(),
                [
                    {
                        "version_id": vid,
                        "path": f.path,
                        "manifest_id": f.manifest_id,
                        "size": f.size,
                        "digest": f.digest,
                        "format": f.format,
                    }
                    for f in files
                ],
            )
    for vid in inserted:
        parents = [p for p in records[vid]["parents"]]
        if parents:
            conn.execute(
                s.version_parents.insert(),
                [{"version_id": vid, "position": i, "parent_id": p} for i, p in enumerate(parents)],
            )
    report["versions"] = len(inserted)

    # 6. replay the journal: refs, states, metrics, deletions.
    for name, ev in events:
        _apply(conn, meta, model_id, inserted, ev)
        conn.execute(s.journal.insert().values(name=name, body=_body(repo, name), written=True))
        report["events"] += 1
    for model, mid in model_ids.items():
        top = max(
            [last[model]] + [numbered[v][0] for v in inserted if records[v]["model"] == model]
        )
        conn.execute(s.models.update().where(s.models.c.id == mid).values(last_number=top))


def _body(repo, name: str) -> bytes:
    return repo.store.backend.get(name)


def _info(conn, store: ChunkStore, rid: str) -> ChunkInfo:
    """An index row from the rebuild's own (uncommitted) transaction."""
    row = conn.execute(store.info_query().where(chunks_t.c.id == rid)).first()
    if row is None:
        raise IntegrityError(f"object {rid} is not in any pack")
    return ChunkInfo(*row)


def _apply(conn, meta: Metadata, model_id, inserted: set[str], ev: dict[str, Any]) -> None:
    """Apply one journal event to the DB being rebuilt (unconditionally: the events are the
    history as it happened; an event about a version the store no longer holds is skipped)."""
    kind = ev.get("type")
    r = s.refs.c
    if kind == "baseline":
        _apply_baseline(conn, model_id, inserted, ev)
    elif kind == "commit":
        vid = ev["version"]
        if vid not in inserted:
            return
        mid = model_id(ev["model"])
        r = s.refs.c
        where = (r.model_id == mid, r.kind == "branch", r.name == ev["branch"])
        if conn.execute(sa.select(r.version_id).where(*where)).first() is None:
            conn.execute(  # the commit created the branch: that is an audited move
                s.ref_events.insert().values(
                    model_id=mid,
                    kind="branch",
                    name=ev["branch"],
                    old_version=None,
                    new_version=vid,
                    actor=ev.get("actor") or "",
                    at=ev["at"],
                    reason="",
                    forced=False,
                    rollback=False,
                )
            )
        _set_ref(conn, mid, "branch", ev["branch"], vid)
    elif kind == "ref":
        mid = model_id(ev["model"])
        new = ev.get("new")
        _set_ref(conn, mid, ev["kind"], ev["name"], new if new in inserted else None)
        if ev.get("record", True):
            conn.execute(
                s.ref_events.insert().values(
                    model_id=mid,
                    kind=ev["kind"],
                    name=ev["name"],
                    old_version=ev.get("old"),
                    new_version=new,
                    actor=ev.get("actor") or "",
                    at=ev["at"],
                    reason=ev.get("reason") or "",
                    forced=bool(ev.get("forced")),
                    rollback=bool(ev.get("rollback")),
                )
            )
    elif kind == "state":
        vid = ev["version"]
        if vid not in inserted:
            return
        conn.execute(
            s.versions.update().where(s.versions.c.id == vid).values(state=ev["new_state"])
        )
        conn.execute(
            s.state_events.insert().values(
                model_id=model_id(ev["model"]),
                version_id=vid,
                **{
                    k: ev.get(k)
                    for k in (
                        "old_state",
                        "new_state",
                        "actor",
                        "at",
                        "reason",
                        "forced",
                        "overridden",
                    )
                },
            )
        )
    elif kind == "metrics":
        vid = ev["version"]
        if vid not in inserted:
            return
        v = s.versions.c
        extra = conn.execute(sa.select(v.extra_metrics).where(v.id == vid)).scalar() or {}
        conn.execute(
            s.versions.update().where(v.id == vid).values(extra_metrics={**extra, **ev["metrics"]})
        )
        conn.execute(
            s.metric_events.insert().values(
                model_id=model_id(ev["model"]),
                version_id=vid,
                metrics=ev["metrics"],
                previous=ev.get("previous") or {},
                actor=ev.get("actor") or "",
                at=ev["at"],
                reason=ev.get("reason") or "",
            )
        )
    elif kind == "rm_version":
        vid = ev["version"]
        conn.execute(
            s.ref_events.insert().values(
                model_id=model_id(ev["model"]),
                kind="rm",
                name=f"v{ev.get('number')}",
                old_version=vid,
                new_version=None,
                actor=ev.get("actor") or "",
                at=ev["at"],
                reason=ev.get("reason") or "",
                forced=bool(ev.get("forced")),
                rollback=False,
            )
        )
        if vid in inserted:
            conn.execute(s.versions.update().where(s.versions.c.id == vid).values(deleted=ev["at"]))
            conn.execute(s.version_files.delete().where(s.version_files.c.version_id == vid))
            conn.execute(s.refs.delete().where(r.version_id == vid))
    elif kind == "rm_model":
        mid = model_id(ev["model"])
        conn.execute(s.models.update().where(s.models.c.id == mid).values(deleted=ev["at"]))


def _set_ref(conn, mid: int, kind: str, name: str, vid: str | None) -> None:
    r = s.refs.c
    conn.execute(s.refs.delete().where(r.model_id == mid, r.kind == kind, r.name == name))
    if vid is not None:
        conn.execute(s.refs.insert().values(model_id=mid, kind=kind, name=name, version_id=vid))


def _apply_baseline(conn, model_id, inserted: set[str], ev: dict[str, Any]) -> None:
    """The state a registry made before the journal had when it was upgraded."""
    v = s.versions.c
    for b in ev["versions"]:
        if b["id"] not in inserted:
            continue
        conn.execute(
            s.versions.update()
            .where(v.id == b["id"])
            .values(extra_metrics=b.get("extra_metrics"), deleted=b.get("deleted"))
        )
        if b.get("deleted"):
            conn.execute(s.version_files.delete().where(s.version_files.c.version_id == b["id"]))
    for model, kind, name, vid in ev["refs"]:
        if vid in inserted:
            _set_ref(conn, model_id(model), kind, name, vid)
    for table, key in ((s.ref_events, "ref_events"), (s.state_events, "state_events"),
                       (s.metric_events, "metric_events")):  # fmt: skip
        for row in ev.get(key, []):
            row = dict(row)
            model = row.pop("model")
            if "version_id" in row and row["version_id"] not in inserted:
                continue
            conn.execute(table.insert().values(model_id=model_id(model), **row))


def backfill(repo: Repository) -> None:
    """Put into the store what a registry made before the journal kept only in its DB: the
    records of its manifests and versions, and one *baseline* journal event with its numbers,
    states, refs, later metrics and audit log — so a rebuild restores it whole."""
    from tvc.repo.version import version_record

    mo = s.models.c
    session = repo.store.session()
    try:
        with repo.meta.read() as conn:
            names = dict(conn.execute(sa.select(mo.id, mo.name)).all())
            for (mid,) in conn.execute(sa.select(s.manifests.c.id)).all():
                session.put_record(Kind.MANIFEST, repo.manifest(mid).canonical())
            rows = conn.execute(sa.select(s.versions)).all()
            baseline: dict[str, Any] = {"type": "baseline", "versions": [], "refs": []}
            for row in rows:
                ver = repo.meta.load_version(conn, row.id)
                raw = version_record(
                    model=ver.model, parents=list(ver.parents), files=list(ver.files),
                    message=ver.message, author=ver.author, created=ver.created,
                    params=ver.params, metrics=row.metrics or {}, datasets=ver.datasets,
                    code=ver.code, base=ver.base,
                )  # fmt: skip
                if hashing.digest(raw) != row.id:
                    continue  # its metadata no longer hashes to its id: fsck reports it
                session.put_record(Kind.VERSION, raw)
                baseline["versions"].append(
                    {
                        "id": row.id,
                        "model": ver.model,
                        "number": row.number,
                        "state": row.state,
                        "extra_metrics": row.extra_metrics,
                        "deleted": row.deleted,
                    }
                )
            baseline["refs"] = [
                (names[m], k, n, vid)
                for m, k, n, vid in conn.execute(
                    sa.select(s.refs.c.model_id, s.refs.c.kind, s.refs.c.name, s.refs.c.version_id)
                )
            ]
            for table, key in ((s.ref_events, "ref_events"), (s.state_events, "state_events"),
                               (s.metric_events, "metric_events")):  # fmt: skip
                out = []
                for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings():
                    d = {k: val for k, val in r.items() if k not in ("id", "model_id")}
                    d["model"] = names[r["model_id"]]
                    out.append(d)
                baseline[key] = out
            baseline["last_numbers"] = {
                names[m]: n for m, n in conn.execute(sa.select(mo.id, mo.last_number))
            }
        session.flush()
        with repo.meta.write() as conn:
            session.index_into(conn)
            if rows:
                repo.meta.journal(conn, baseline)
    except BaseException:
        session.abort()
        raise
    finally:
        session.end_lease()
