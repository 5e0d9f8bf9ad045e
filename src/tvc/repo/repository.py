"""The repository: a registry on disk — config, metadata store, chunk store.

Layout of ``.tvc/``::

    config.toml     settings (store URL, metadata URL, lifecycle, gates)
    tvc.db          SQLite metadata (WAL): an index over the store — chunk index, models,
                    versions, manifests, refs, audit logs (rebuilt by `fsck --rebuild-index`)
    objects/packs/  pack files, named by their BLAKE3: chunks, and the manifest and version
                    records
    objects/journal/ one object per metadata event (numbers, refs, states, metrics, deletions)
    tmp/            staging for packs being written (garbage after a crash; gc removes it)

A commit writes packs durably — chunks, then its manifests and its version record — with no
lock held, then in one short DB transaction indexes them, takes the next version number and
moves the branch by compare-and-swap; the journal event follows. A crash before the
transaction leaves unindexed packs that gc removes after its grace period; a crash after it
leaves a complete version. Nothing in between is visible.

Two commits to one branch at once both land, in a linear history: the one whose transaction
comes second finds the branch moved, re-parents its version record on the new head and tries
again (its chunks are stored already) — unless the caller asked for a specific head
(``expected_head``, as merge does), which is then a ConflictError.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import tomli_w

from tvc.errors import (
    AmbiguousRefError,
    ConflictError,
    ExistsError,
    IntegrityError,
    NotARegistryError,
    StorageError,
    UnknownRefError,
    UsageError,
)
from tvc.repo import db, names, paths, worktree
from tvc.repo import schema as s
from tvc.repo.files import (
    NoProgress,
    Progress,
    delta_pieces,
    stage,
    store_files,
)
from tvc.repo.location import FORMAT_VERSION, REGISTRY_DIR, find_root, read_config
from tvc.repo.manifest import Manifest
from tvc.repo.meta import Metadata, default_author, version_from_row
from tvc.repo.version import FileEntry, Version, version_record, walk_history
from tvc.store import durable
from tvc.store.backends import open_backend
from tvc.store.chunkstore import ChunkStore, WriteSession
from tvc.store.index import chunks as chunks_t
from tvc.store.index import packs as packs_t
from tvc.store.packs import Kind

DEFAULT_LOCK_TIMEOUT = 60.0
COMMIT_ATTEMPTS = 8

__all__ = ["CommitResult", "Repository", "default_author", "find_root", "version_from_row"]


@dataclass(frozen=True)
class CommitResult(Version):
    """What ``commit`` returns: the new version itself, plus what storing it cost.

    A ``Version`` (``.ref``, ``.id``, ``.files`` …), so ``reg.commit(...).ref`` reads like the
    contract's ``commit -> Version``; ``.version`` is the plain record, as ``show`` returns it.
    """

    logical_bytes: int = 0  # size of the files committed
    new_bytes: int = 0  # bytes this commit added to the store (after dedup and compression)
    new_chunks: int = 0
    total_chunks: int = 0

    @classmethod
    def of(cls, version: Version, **stored: int) -> CommitResult:
        return cls(**{f.name: getattr(version, f.name) for f in fields(Version)}, **stored)

    @property
    def version(self) -> Version:
        return Version(**{f.name: getattr(self, f.name) for f in fields(Version)})

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "logical_bytes": self.logical_bytes,
            "new_bytes": self.new_bytes,
            "new_chunks": self.new_chunks,
            "chunks": self.total_chunks,
        }


class _BranchMoved(Exception):
    """The branch is no longer where the commit started (internal: the commit re-parents).

    ``seen``: where the branch points now (None: it does not exist); ``parent``: what the
    version's first parent becomes (a new branch starts at the head of main).
    """

    def __init__(self, seen: str | None, parent: str | None) -> None:
        self.seen, self.parent = seen, parent


class _ChunksGone(Exception):
    """Chunks the commit deduplicated against are gone (gc, damage): store them again."""

    def __init__(self, ids: set[str]) -> None:
        self.ids = ids


def lock_timeout() -> float:
    raw = os.environ.get("TVC_LOCK_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < 1e7):
        raise UsageError(f"TVC_LOCK_TIMEOUT={raw!r}: expected a number of seconds")
    return value


def _writable(dbfile: Path) -> bool:
    return os.access(dbfile.parent, os.W_OK) and os.access(dbfile, os.W_OK)


class Repository:
    """A registry: config, a metadata store (``.meta``) and a chunk store (``.store``).

    Thread-safe; several processes may read and write it at once (writes are serialized only
    for the length of their metadata transaction).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, _rebuild: bool = False):
        self.root = find_root(path)
        self.dir = self.root / REGISTRY_DIR
        self.config = self._read_config()
        if self.config.get("core", {}).get("format") != FORMAT_VERSION:
            raise NotARegistryError(f"{self.dir}: unsupported registry format")
        self.db_url = db.normalize_url(
            self.config.get("metadata", {}).get("url") or "sqlite:///tvc.db", self.dir
        )
        store_url = self.config.get("store", {}).get("url") or "objects"
        backend = open_backend(store_url, base=self.dir)
        self.store_where = store_url
        dbfile = db.sqlite_path(self.db_url)
        where = str(dbfile) if dbfile else self.db_url.split("@")[-1]
        if not _rebuild and dbfile is not None:
            try:
                missing = (
                    "missing"
                    if not dbfile.exists()
                    else "empty"
                    if not dbfile.stat().st_size
                    else ""
                )
            except OSError as exc:
                raise durable.storage_error(exc, f"cannot read {dbfile}") from exc
            if missing:
                raise self._lost_db(backend, where, missing)
        # A registry shared read-only (no write permission on .tvc/, a read-only mount): read
        # commands work; a write fails with a storage error (exit 10) at its transaction.
        self.read_only = dbfile is not None and not _rebuild and not _writable(dbfile)
        url = db.read_only_url(self.db_url) if self.read_only else self.db_url
        self.engine = db.create_engine(url, busy_timeout=lock_timeout())
        if not _rebuild:
            rev = db.current_revision(self.engine)
            if rev is None:
                self.engine.dispose()
                raise self._lost_db(backend, where, "empty")
            if self.read_only and rev != db.SCHEMA_HEAD:
                self.engine.dispose()
                raise StorageError(
                    f"{self.dir} needs a schema upgrade ({rev} → {db.SCHEMA_HEAD}), which needs "
                    "write access: run any tvc command there as a user who can write to it"
                )
            db.migrate(self.engine, rev)
        self.store = ChunkStore(backend, self.engine, self.dir / "tmp")
        self.meta = Metadata(self.engine, backend, where)
        self._manifest_cache: dict[str, Manifest] = {}
        if not _rebuild and rev is not None and rev < "0003":
            from tvc.repo.rebuild import backfill

            backfill(self)  # a registry made before the store held the truth: now it does

    @staticmethod
    def _lost_db(backend, where: str, what: str) -> IntegrityError:
        try:
            held = sum(1 for _ in backend.list("packs/"))
        except Exception:
            held = -1
        holds = f"the store holds {held} pack(s)" if held >= 0 else "the store may hold versions"
        return IntegrityError(
            f"the metadata DB {where} is {what}, but this is a registry: {holds}. Rebuild the DB "
            "from the store with `tvc fsck --rebuild-index` (or restore a backup of it)"
        )

    # -- creation --------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str] = ".",
        *,
        store: str | None = None,
        metadata: str | None = None,
    ) -> Repository:
        root = Path(path).absolute()
        regdir = root / REGISTRY_DIR
        if (regdir / "config.toml").exists():
            raise ExistsError(f"a tvc registry already exists at {regdir}")
        try:
            durable.make_dirs(regdir)
            (regdir / "tmp").mkdir(exist_ok=True)
        except OSError as exc:
            raise durable.storage_error(exc, f"cannot create {regdir}") from exc
        config = {
            "core": {"format": FORMAT_VERSION},
            "metadata": {"url": metadata or "sqlite:///tvc.db"},
            "store": {"url": store or "objects"},
        }
        backend = open_backend(config["store"]["url"], base=regdir)  # refuses unknown schemes
        if hasattr(backend, "check_bucket"):
            backend.check_bucket()  # a missing bucket or refused credentials: say so now
        url = db.normalize_url(config["metadata"]["url"], regdir)
        engine = db.create_engine(url, busy_timeout=lock_timeout())
        try:
            if db.current_revision(engine) is not None and metadata:
                raise ExistsError(f"the metadata DB {url.split('@')[-1]} is in use already")
            db.migrate(engine)
        finally:
            engine.dispose()
        # config.toml last: a half-made directory is not taken for a registry.
        durable.write_bytes(regdir / "config.toml", tomli_w.dumps(config).encode())
        return cls(root)

    @classmethod
    def join(cls, path: str | os.PathLike[str], *, store: str, metadata: str) -> Repository:
        """A config directory at ``path`` for a registry that exists already in the shared
        ``metadata`` DB and ``store`` (another server replica, another host): only
        ``config.toml`` and a local staging directory are written; nothing the replicas share
        lives in it."""
        root = Path(path).absolute()
        regdir = root / REGISTRY_DIR
        if (regdir / "config.toml").exists():
            raise ExistsError(f"a tvc registry already exists at {regdir}")
        backend = open_backend(store, base=regdir)
        if hasattr(backend, "check_bucket"):
            backend.check_bucket()
        url = db.normalize_url(metadata, regdir)
        if db.sqlite_path(url) is not None:
            raise UsageError("only a shared metadata DB (postgresql://…) can be joined")
        engine = db.create_engine(url, busy_timeout=lock_timeout())
        try:
            if db.current_revision(engine) is None:
                raise NotARegistryError(
                    f"the metadata DB {url.split('@')[-1]} holds no registry: create one with "
                    "`tvc init --store URL --db URL` first"
                )
        finally:
            engine.dispose()
        try:
            durable.make_dirs(regdir)
            (regdir / "tmp").mkdir(exist_ok=True)
        except OSError as exc:
            raise durable.storage_error(exc, f"cannot create {regdir}") from exc
        config = {
            "core": {"format": FORMAT_VERSION},
            "metadata": {"url": metadata},
            "store": {"url": store},
        }
        durable.write_bytes(regdir / "config.toml", tomli_w.dumps(config).encode())
        return cls(root)

    def _read_config(self) -> dict[str, Any]:
        return read_config(self.dir)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- refs ------------------------------------------------------------------------------
    def resolve(self, ref: str | names.Ref, conn: sa.Connection | None = None) -> Version:
        """The version a reference names. Unknown → UnknownRefError; ambiguous → lists them."""
        if conn is None:
            with self.meta.read() as c:
                return self.resolve(ref, c)
        r = names.parse_ref(ref) if isinstance(ref, str) else ref
        mid = self.meta.model_id(conn, r.model)
        candidates: dict[str, list[str]] = {}  # version id -> how it matched

        m = names.VERSION_RE.match(r.rev)
        if m:
            number = int(m.group(1))
            vid = self.meta.version_by_number(conn, mid, number) if number < 2**62 else None
            if vid is None:
                raise UnknownRefError(f"{r.model} has no version {r.rev}")
            candidates[vid] = [r.rev]
        else:
            rc = s.refs.c
            q = sa.select(rc.kind, rc.version_id).where(rc.model_id == mid, rc.name == r.rev)
            for kind, vid in conn.execute(q):
                candidates.setdefault(vid, []).append(f"{kind} {r.rev}")
            if names.ID_PREFIX_RE.match(r.rev):
                v = s.versions.c
                q = sa.select(v.id).where(
                    v.model_id == mid, v.id.startswith(r.rev), v.deleted.is_(None)
                )
                for (vid,) in conn.execute(q):
                    candidates.setdefault(vid, []).append(f"id {vid[:12]}")
        if not candidates:
            if not r.explicit:
                raise UnknownRefError(
                    f"{r.model} has no branch {r.rev!r} (name a version: {r.model}@vN)"
                )
            raise UnknownRefError(f"{r.model} has no version, branch, tag, alias or id {r.rev!r}")
        if len(candidates) > 1:
            listed = "; ".join(
                f"{', '.join(how)} → {self.meta.load_version(conn, vid, files=False).ref}"
                for vid, how in candidates.items()
            )
            raise AmbiguousRefError(f"{r} is ambiguous: {listed}")
        vid = next(iter(candidates))
        for step in range(r.ancestors):
            parents = self.meta.parents(conn, vid)
            if not parents:
                raise UnknownRefError(f"{r}: {r.model}@{r.rev}~{step} has no parent")
            vid = parents[0]
        version = self.meta.load_version(conn, vid)
        if version.deleted is not None:
            raise UnknownRefError(f"{version.ref} was deleted (`tvc rm`); see `tvc audit`")
        return version

    def version(self, vid: str) -> Version:
        with self.meta.read() as conn:
            return self.meta.load_version(conn, vid)

    # -- manifests -------------------------------------------------------------------------
    def manifest(self, manifest_id: str) -> Manifest:
        cached = self._manifest_cache.get(manifest_id)
        if cached is not None:
            return cached
        with self.meta.read() as conn:
            body = conn.execute(
                sa.select(s.manifests.c.body).where(s.manifests.c.id == manifest_id)
            ).scalar()
        if body is None:
            raise IntegrityError(f"manifest {manifest_id} is missing")
        m = Manifest.decode(body, manifest_id)
        self._manifest_cache[manifest_id] = m
        return m

    def cache_manifest(self, manifest_id: str, body: bytes) -> Manifest:
        """A manifest read by a caller's own query (joined to its file rows), decoded into the
        cache unless it is there already."""
        cached = self._manifest_cache.get(manifest_id)
        if cached is None:
            cached = self._manifest_cache[manifest_id] = Manifest.decode(body, manifest_id)
        return cached

    def prefetch_manifests(
        self,
        ids: Iterable[str],
        *,
        versions: list[str] | None = None,
        conn: sa.Connection | None = None,
    ) -> None:
        """Load many manifests into the cache in batched queries (a checkout of 100,000 small
        files would otherwise spend a query on each). ``versions``: versions whose files name
        every one of ``ids`` — then the missing ones come in one statement however many there
        are (the manifests of those versions' files, by subquery). ``conn``: read inside the
        caller's transaction."""
        wanted = [i for i in dict.fromkeys(ids) if i not in self._manifest_cache]
        if not wanted:
            return
        if conn is None:
            with self.meta.read() as c:
                return self.prefetch_manifests(wanted, versions=versions, conn=c)
        m = s.manifests.c
        if versions is not None and len(wanted) > 500:
            f = s.version_files.c
            of_versions = sa.select(f.manifest_id).where(f.version_id.in_(versions))
            for mid, body in conn.execute(sa.select(m.id, m.body).where(m.id.in_(of_versions))):
                self.cache_manifest(mid, body)
            return
        for i in range(0, len(wanted), 500):
            q = sa.select(m.id, m.body).where(m.id.in_(wanted[i : i + 500]))
            for mid, body in conn.execute(q):
                self._manifest_cache[mid] = Manifest.decode(body, mid)

    # -- commit ----------------------------------------------------------------------------
    def commit(
        self,
        model: str,
        paths_: paths.PathArgs,
        message: str = "",
        *,
        branch: str = names.DEFAULT_BRANCH,
        params: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        datasets: dict[str, Any] | None = None,
        code: dict[str, Any] | None = None,
        base: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
        author: str | None = None,
        merge_parents: list[str] | tuple[str, ...] = (),
        expected_head: str | None = None,
        state: str = "created",
        parse: bool = True,
        allow_unsafe_pickle: bool = False,
        progress: Progress | None = None,
        keep: Iterable[FileEntry] = (),
    ) -> CommitResult:
        """Record ``paths_`` as a new version of ``model`` on ``branch``.

        Every file is parsed (headers only) before anything is written, so a malformed file
        stops the commit with nothing stored. Then chunks are stored — no lock held —
        deduplicated against everything already in the registry, and delta-encoded against the
        same tensor piece of the parent version (or of ``base``) where that is smaller; the
        manifests and the version record go into the packs too. One short transaction then
        records it (see the module doc for what happens when the branch moved meanwhile).
        ``merge_parents`` (version ids) become further parents after the branch head: that is
        how a merge is recorded. ``state`` is the new version's lifecycle state. With
        ``expected_head`` (a version id) the commit is refused unless the branch still points
        there when it is recorded — compare-and-swap for read-modify-commit.
        """
        names.check_model_name(model)
        names.check_ref_name(branch, "branch")
        for t in tags:
            names.check_ref_name(t, "tag")
        progress = progress or NoProgress()
        author = author or default_author()
        kept = list(keep)
        given = [] if kept and not paths.as_list(paths_) else paths_
        staged = stage(given, parse=parse, allow_unsafe_pickle=allow_unsafe_pickle) if given else []
        new_paths = {st.rel for st in staged}
        kept = [fe for fe in kept if fe.path not in new_paths]

        with self.meta.read() as conn:
            mid = conn.execute(
                sa.select(s.models.c.id).where(
                    s.models.c.name == model, s.models.c.deleted.is_(None)
                )
            ).scalar()
            seen = parent = None
            if mid is not None:
                seen = parent = self.meta.ref_target(conn, mid, "branch", branch)
                if parent is None:
                    parent = self.meta.ref_target(conn, mid, "branch", names.DEFAULT_BRANCH)
                for t in tags:
                    if self.meta.ref_target(conn, mid, "tag", t):
                        raise ExistsError(f"tag {t!r} already exists on {model}")
            if expected_head is not None and parent != expected_head:
                raise ConflictError(
                    f"branch {branch} of {model} moved (it is no longer at "
                    f"{expected_head[:12]}); run the operation again"
                )
            parent_v = self.meta.load_version(conn, parent) if parent else None
            base_v = self.resolve(base, conn) if base else None
            for extra in merge_parents:
                self.meta.load_version(conn, extra, files=False)  # must exist

        meta = {
            "message": message,
            "author": author,
            "created": time.time(),
            "params": params or {},
            "metrics": metrics or {},
            "datasets": datasets or {},
            "code": code,
            "base": base_v.id if base_v else None,
        }
        delta_sources = [v for v in (parent_v, base_v) if v is not None]
        session = self.store.session()
        try:
            pieces = delta_pieces(delta_sources, self.manifest)
            entries, new_chunks, total_chunks = store_files(staged, pieces, session, progress)
            entries = _with_kept(entries, kept, self.manifest)
            for _attempt in range(COMMIT_ATTEMPTS):
                parents = [parent] if parent else []
                parents += [p for p in merge_parents if p not in parents]
                session.put_records(Kind.MANIFEST, [m.canonical() for _fe, m in entries])
                files = [fe for fe, _m in entries]
                record = version_record(model=model, parents=parents, files=files, **meta)
                vid = session.put_record(Kind.VERSION, record)
                session.flush()
                try:
                    version = self._record_version(
                        model=model,
                        branch=branch,
                        seen=seen,
                        parent=parent,
                        vid=vid,
                        parents=parents,
                        entries=entries,
                        session=session,
                        meta=meta,
                        tags=tags,
                        state=state,
                    )
                    break
                except _BranchMoved as moved:
                    if expected_head is not None:
                        raise ConflictError(
                            f"branch {branch} of {model} moved during the operation; run it again"
                        ) from None
                    seen, parent = moved.seen, moved.parent
                except _ChunksGone as gone:
                    # gc took (or fsck found damaged) chunks this commit reused: store them
                    # again from the files, which are still here.
                    session.force |= gone.ids
                    session.healed |= gone.ids
                    entries, new_chunks, total_chunks = store_files(
                        staged, pieces, session, NoProgress()
                    )
                    entries = _with_kept(entries, kept, self.manifest)
            else:
                raise ConflictError(
                    f"{model}@{branch}: the commit could not be recorded after "
                    f"{COMMIT_ATTEMPTS} attempts (the branch kept moving); try again"
                )
        except BaseException:
            session.abort()
            raise
        finally:
            session.end_lease()
        return CommitResult.of(
            version,
            logical_bytes=version.size,
            new_bytes=session.stored_bytes,
            new_chunks=new_chunks,
            total_chunks=total_chunks,
        )

    def _record_version(self, **kw: Any) -> Version:
        """Where a commit's stored version gets recorded: here, in one transaction. (A client
        of a server records it there instead: :mod:`tvc.remote.client`.)"""
        with self.meta.write() as conn:
            return self._record(conn, **kw)

    def _index_objects(
        self, conn: sa.Connection, entries: list[tuple[FileEntry, Manifest]], session: WriteSession
    ) -> None:
        """Inside the transaction that records a version: claim what it references and did not
        store itself (gc's protocol: it must still be there), index what the session stored,
        and store and keep its manifests."""
        wanted = {cid for _fe, m in entries for cid, _n in m.chunks}
        wanted |= {m.id for _fe, m in entries}
        wanted |= {e.base for _n, _s, es in session.packs for e in es if e.base}
        gone = self.store.claim(conn, wanted - set(session.pending))
        if gone:
            raise _ChunksGone(gone)
        session.index_into(conn)
        self.meta.keep_manifests(conn, [m for _fe, m in entries])

    def _record(
        self,
        conn: sa.Connection,
        *,
        model: str,
        branch: str,
        seen: str | None,
        parent: str | None,
        vid: str,
        parents: list[str],
        entries: list[tuple[FileEntry, Manifest]],
        session: WriteSession,
        meta: dict[str, Any],
        tags: list[str] | tuple[str, ...],
        state: str,
    ) -> Version:
        """The commit's transaction: index, number, record, move the branch, journal."""
        mid = self.meta.model_id(conn, model, create=True)
        self.meta.lock_model(conn, mid)
        head = self.meta.ref_target(conn, mid, "branch", branch)
        main = None  # where a new branch starts: only needed when there is no branch yet
        if head is None:
            main = self.meta.ref_target(conn, mid, "branch", names.DEFAULT_BRANCH)
        if head != seen or (head is None and parent != main):
            raise _BranchMoved(head, head if head is not None else main)
        for p in parents:
            v = self.meta.load_version(conn, p, files=False)
            if v.deleted is not None:
                raise ConflictError(f"{v.ref} was deleted during the commit")
        self._index_objects(conn, entries, session)
        number = self.meta.take_number(conn, mid)
        files = [fe for fe, _m in entries]
        size = sum(fe.size for fe in files)
        self.meta.insert_version(
            conn,
            vid=vid,
            mid=mid,
            number=number,
            state=state,
            size=size,
            parents=parents,
            files=files,
            meta=meta,
        )
        self.meta.move_ref(
            conn, mid, "branch", branch, vid, expected=head, actor=meta["author"], journal=False
        )
        for t in tags:
            self.meta.create_ref(
                conn, mid, "tag", t, vid, actor=meta["author"], reason="commit --tag"
            )
        self.meta.journal(
            conn,
            {
                "type": "commit",
                "model": model,
                "version": vid,
                "number": number,
                "branch": branch,
                "parent": head,
                "state": state,
                "actor": meta["author"],
            },
        )
        return self.meta.load_version(conn, vid)

    # -- reading ---------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        mo, v, r = s.models.c, s.versions.c, s.refs.c
        live = sa.and_(v.model_id == mo.id, v.deleted.is_(None))
        q = (
            sa.select(
                mo.id, mo.name, sa.func.count(v.id), sa.func.max(v.number), sa.func.max(v.created)
            )
            .join_from(s.models, s.versions, live, isouter=True)
            .where(mo.deleted.is_(None))
            .group_by(mo.id)
            .order_by(mo.name)
        )
        with self.meta.read() as conn:
            rows = conn.execute(q).all()
            branches: dict[int, list[str]] = {}
            for mid, name in conn.execute(
                sa.select(r.model_id, r.name).where(r.kind == "branch").order_by(r.name)
            ):
                branches.setdefault(mid, []).append(name)
        return [
            {
                "model": name,
                "versions": count,
                "latest": f"v{latest}" if latest else None,
                "updated": updated,
                "branches": branches.get(mid, []),
            }
            for mid, name, count, latest, updated in rows
        ]

    def log(self, ref: str, n: int | None = None) -> list[Version]:
        """Versions reachable from ``ref`` through parents, newest first (like ``git log``);
        deleted ones are left out (see :func:`tvc.repo.version.walk_history`)."""
        with self.meta.read() as conn:
            return walk_history(
                self.resolve(ref, conn),
                lambda vid: self.meta.load_version(conn, vid, files=False),
                n,
            )

    def show(self, ref: str) -> Version:
        return self.resolve(ref)

    def refs_of(self, model: str) -> list[dict[str, Any]]:
        with self.meta.read() as conn:
            mid = self.meta.model_id(conn, model)
            r, v = s.refs.c, s.versions.c
            q = (
                sa.select(r.kind, r.name, r.version_id, v.number)
                .join_from(s.refs, s.versions, r.version_id == v.id)
                .where(r.model_id == mid)
                .order_by(r.kind, r.name)
            )
            return [
                {"kind": k, "name": n, "version": f"v{num}", "id": vid}
                for k, n, vid, num in conn.execute(q)
            ]

    def refs_pointing_at(self, version: Version) -> list[tuple[str, str]]:
        with self.meta.read() as conn:
            r = s.refs.c
            q = sa.select(r.kind, r.name).where(r.version_id == version.id).order_by(r.kind)
            return [(k, n) for k, n in conn.execute(q)]

    def file_entry(self, version: Version, path: str) -> FileEntry:
        if not version.files and version.size:  # from log/search, which list no files
            version = self.version(version.id)
        for fe in version.files:
            if fe.path == path:
                return fe
        listed = ", ".join(f.path for f in version.files[:10])
        raise UnknownRefError(f"{version.ref} has no file {path!r} (files: {listed})")

    def iter_file(self, version: Version, path: str) -> Iterator[bytes | memoryview]:
        """The verified bytes of one file, chunk by chunk (bytes-like blocks)."""
        fe = self.file_entry(version, path)
        manifest = self.manifest(fe.manifest_id)
        try:
            yield from self.store.read_many([cid for cid, _n in manifest.chunks])
        except IntegrityError as exc:
            raise IntegrityError(f"{exc} (in {version.ref}:{path})") from exc

    def checkout(
        self,
        ref: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        only: list[str] | None = None,
        force: bool = False,
        progress: Progress | None = None,
    ) -> worktree.CheckoutResult:
        """Make ``dest`` hold exactly the version's files, every byte verified (atomically:
        a failure leaves ``dest`` as it was). The result lists the version's files under
        ``dest`` and what was written, removed and kept (see :mod:`tvc.repo.worktree`)."""
        version = self.resolve(ref)
        dest_dir = Path(dest) if dest is not None else Path(version.model.split("/")[-1])
        self.prefetch_manifests(fe.manifest_id for fe in worktree.select(version, only)[0])
        return worktree.checkout(
            self.store, self.manifest, version, dest_dir, only=only, force=force, progress=progress
        )

    def read(self, ref: str | Version, path: str) -> bytes:
        version = ref if isinstance(ref, Version) else self.resolve(ref)
        return b"".join(self.iter_file(version, path))

    # -- branches and tags -----------------------------------------------------------------
    def _create_ref(self, kind: str, model: str, name: str, ref: str | None) -> Version:
        names.check_ref_name(name, kind)
        with self.meta.write() as conn:
            mid = self.meta.model_id(conn, model)
            self.meta.lock_model(conn, mid)
            v = self.resolve(f"{model}@{ref}" if ref else model, conn)
            if kind != "alias" and self.meta.ref_target(conn, mid, "alias", name):
                raise ExistsError(
                    f"{model} has an alias named {name!r}; a {kind} of that name would make "
                    f"{model}@{name} ambiguous"
                )
            if kind == "tag" and self.meta.ref_target(conn, mid, "tag", name):
                raise ExistsError(f"tag {name!r} already exists on {model} (tags never move)")
            self.meta.create_ref(conn, mid, kind, name, v.id, reason=kind)
            return v

    def _delete_ref(self, kind: str, model: str, name: str) -> None:
        with self.meta.write() as conn:
            mid = self.meta.model_id(conn, model)
            self.meta.lock_model(conn, mid)
            old = self.meta.ref_target(conn, mid, kind, name)
            if not old:
                raise UnknownRefError(f"{model} has no {kind} {name!r}")
            self.meta.move_ref(conn, mid, kind, name, None, expected=old, reason=f"{kind} -d")

    def branch(self, model: str, name: str, start: str | None = None) -> Version:
        """Create branch ``name`` at ``start`` (default: the head of main)."""
        return self._create_ref("branch", model, name, start)

    def delete_branch(self, model: str, name: str) -> None:
        self._delete_ref("branch", model, name)

    def tag(self, model: str, name: str, ref: str | None = None) -> Version:
        """Tag ``ref`` (default: the head of main) as ``name``; tags never move."""
        return self._create_ref("tag", model, name, ref)

    def delete_tag(self, model: str, name: str) -> None:
        self._delete_ref("tag", model, name)

    # -- maintenance -----------------------------------------------------------------------
    def live_objects(self, conn: sa.Connection) -> tuple[set[str], set[str]]:
        """(manifest ids, object ids) that live versions use: their chunks and the chunks'
        delta bases, their manifests and their version records (kept in packs too).

        Every version not deleted is a root: versions are immutable records addressable as
        MODEL@vN, so deleting a branch never makes one unreachable; `tvc rm` does.
        """
        mids = {r[0] for r in conn.execute(sa.select(s.version_files.c.manifest_id).distinct())}
        ids: set[str] = set(mids)
        ids.update(
            r[0]
            for r in conn.execute(sa.select(s.versions.c.id).where(s.versions.c.deleted.is_(None)))
        )
        for mid in mids:
            ids.update(cid for cid, _n in self.manifest(mid).chunks)
        bases = dict(
            conn.execute(
                sa.select(chunks_t.c.id, chunks_t.c.base).where(chunks_t.c.base.is_not(None))
            ).all()
        )
        frontier = list(ids)
        while frontier:
            b = bases.get(frontier.pop())
            if b and b not in ids:
                ids.add(b)
                frontier.append(b)
        return mids, ids

    def stats(self) -> dict[str, Any]:
        """Logical bytes (what versions contain) against what the store holds, and why.

        Savings split three ways: *dedup* (logical bytes that are chunks stored once),
        *compression* (what codecs saved on unique chunks) and *delta* (what encoding changed
        tensors against their parent saved beyond that). Per model, shared chunks count in full
        for every model that uses them.
        """
        c = chunks_t.c
        with self.meta.read() as conn:
            f, v, mo = s.version_files.c, s.versions.c, s.models.c
            sizes = {
                row.id: (row.raw_len, row.plain_len, row.stored_len)
                for row in conn.execute(
                    sa.select(c.id, c.raw_len, c.plain_len, c.stored_len).where(
                        c.kind == Kind.CHUNK
                    )
                )
            }
            per_model: dict[str, dict[str, Any]] = {}
            for name, logical, nver in conn.execute(
                sa.select(mo.name, sa.func.coalesce(sa.func.sum(v.size), 0), sa.func.count(v.id))
                .join_from(
                    s.models,
                    s.versions,
                    sa.and_(v.model_id == mo.id, v.deleted.is_(None)),
                    isouter=True,
                )
                .where(mo.deleted.is_(None))
                .group_by(mo.id)
                .order_by(mo.name)
            ):
                manifest_ids = {
                    r[0]
                    for r in conn.execute(
                        sa.select(f.manifest_id)
                        .join_from(s.version_files, s.versions, f.version_id == v.id)
                        .join(s.models, v.model_id == mo.id)
                        .where(mo.name == name)
                    )
                }
                used = {cid for m in manifest_ids for cid, _n in self.manifest(m).chunks}
                per_model[name] = {"versions": nver, **_savings(int(logical), used, sizes)}
            files = conn.execute(sa.select(sa.func.count()).select_from(s.version_files)).scalar()
            pack_count, pack_bytes = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(packs_t.c.size), 0)).where(
                    packs_t.c.retired.is_(None)
                )
            ).one()
        logical = sum(m["logical_bytes"] for m in per_model.values())
        overall = _savings(logical, sizes.keys(), sizes)
        return {
            "models": per_model,
            "versions": sum(m["versions"] for m in per_model.values()),
            "files": files,
            **overall,
            "pack_bytes": int(pack_bytes),
            "packs": pack_count,
            "chunks": len(sizes),
            "ratio": (int(pack_bytes) / logical) if logical else None,
        }

    def fsck(
        self, *, read_data: bool = False, repair: bool = True, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Check the invariants of the store and the repo; ``read_data`` re-hashes every byte.

        With ``repair`` (the default) chunks found missing or corrupt are marked damaged, so
        the next commit of the same bytes stores them again (see the chunk store).
        """
        from tvc.repo.check import check

        return check(self, read_data=read_data, repair=repair, progress=progress or NoProgress())

    def gc(self, *, dry_run: bool = False, grace: float | None = None) -> dict[str, Any]:
        """Reclaim what no live version uses; see :mod:`tvc.repo.gc` for the protocol."""
        from tvc.repo.gc import collect_garbage

        return collect_garbage(self, dry_run=dry_run, grace=grace)

    @classmethod
    def rebuild_index(
        cls, path: str | os.PathLike[str] | None = None, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Rebuild the metadata DB from the store alone (``tvc fsck --rebuild-index``)."""
        from tvc.repo.rebuild import rebuild

        return rebuild(cls(path, _rebuild=True), progress or NoProgress())


def _with_kept(
    entries: list[tuple[FileEntry, Manifest]],
    kept: list[FileEntry],
    manifest: Callable[[str], Manifest],
) -> list[tuple[FileEntry, Manifest]]:
    """The stored entries and the kept ones, sorted by path as a commit lists its files."""
    if not kept:
        return entries
    both = entries + [(fe, manifest(fe.manifest_id)) for fe in kept]
    return sorted(both, key=lambda e: e[0].path)


def _savings(logical: int, ids, sizes: dict[str, tuple[int, int, int]]) -> dict[str, Any]:
    raw = plain = stored = 0
    for cid in ids:
        r, p, st = sizes.get(cid, (0, 0, 0))
        raw, plain, stored = raw + r, plain + p, stored + st
    return {
        "logical_bytes": logical,
        "unique_bytes": raw,
        "stored_bytes": stored,
        "saved": {"dedup": logical - raw, "compression": raw - plain, "delta": plain - stored},
    }
