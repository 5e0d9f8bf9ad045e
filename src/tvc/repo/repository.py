"""The repository: a registry on disk — config, metadata DB, chunk store, writer lock.

Layout of ``.tvc/``::

    config.toml     settings (store URL, metadata URL, lifecycle, gates)
    tvc.db          SQLite metadata (WAL): chunk index, models, versions, manifests, refs
    objects/packs/  pack files, named by their BLAKE3
    tmp/            staging for packs being written (garbage after a crash; gc removes it)
    lock            the writer lock: one writer at a time, readers never wait

A commit writes packs (durably), then indexes their chunks and records the version and moves the
branch in one DB transaction. A crash before that transaction leaves unindexed packs that gc
removes; a crash after it leaves a complete version. Nothing in between is visible.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import filelock
import sqlalchemy as sa
import tomli_w

from tvc.errors import (
    AmbiguousRefError,
    ConflictError,
    ExistsError,
    IntegrityError,
    LockTimeoutError,
    NotARegistryError,
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
from tvc.repo.manifest import Manifest
from tvc.repo.version import FileEntry, Version, version_id
from tvc.store import durable
from tvc.store.backends import LocalBackend
from tvc.store.chunkstore import ChunkStore
from tvc.store.index import chunks as chunks_t
from tvc.store.index import packs as packs_t

REGISTRY_DIR = ".tvc"
FORMAT_VERSION = 1
DEFAULT_LOCK_TIMEOUT = 60.0


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


def version_from_row(
    row: Any, model: str, parents: list[str], files: tuple[FileEntry, ...] = ()
) -> Version:
    """A ``Version`` from a ``versions`` table row (the one place that reads its columns).

    Metrics added after the commit (``extra_metrics``) win over committed ones; the id covers
    only the committed ``metrics`` column.
    """
    return Version(
        id=row.id,
        model=model,
        number=row.number,
        message=row.message,
        author=row.author,
        created=row.created,
        params=row.params or {},
        metrics={**(row.metrics or {}), **(row.extra_metrics or {})},
        datasets=row.datasets or {},
        code=row.code,
        base=row.base,
        parents=tuple(parents),
        state=row.state,
        size=row.size,
        files=files,
    )


def default_author() -> str:
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


def find_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding ``.tvc``: ``start`` itself, or the nearest parent that has one."""
    env = os.environ.get("TVC_DIR")
    if start is None and env:
        start = env
    here = Path(start or os.getcwd()).absolute()
    if here.name == REGISTRY_DIR and (here / "config.toml").is_file():
        return here.parent
    if start is not None:
        if (here / REGISTRY_DIR / "config.toml").is_file():
            return here
        raise NotARegistryError(f"no tvc registry at {here} (run `tvc init`)")
    for cand in (here, *here.parents):
        if (cand / REGISTRY_DIR / "config.toml").is_file():
            return cand
    raise NotARegistryError(
        f"not in a tvc registry: no {REGISTRY_DIR}/ in {here} or its parents (run `tvc init`)"
    )


class Repository:
    """A registry on the local disk. Thread-safe for readers; writers take the lock."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.root = find_root(path)
        self.dir = self.root / REGISTRY_DIR
        self.config = self._read_config()
        if self.config.get("core", {}).get("format") != FORMAT_VERSION:
            raise NotARegistryError(f"{self.dir}: unsupported registry format")
        url = self.config.get("metadata", {}).get("url") or "sqlite:///tvc.db"
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = f"sqlite:///{self.dir / url[len('sqlite:///') :]}"
        self.engine = db.create_engine(url)
        db.migrate(self.engine)
        store_url = self.config.get("store", {}).get("url") or "objects"
        backend = LocalBackend(self.dir / store_url)
        self.store = ChunkStore(backend, self.engine, self.dir / "tmp")
        self._manifest_cache: dict[str, Manifest] = {}

    # -- creation --------------------------------------------------------------------------
    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".") -> Repository:
        root = Path(path).absolute()
        regdir = root / REGISTRY_DIR
        if (regdir / "config.toml").exists():
            raise ExistsError(f"a tvc registry already exists at {regdir}")
        regdir.mkdir(parents=True, exist_ok=True)
        (regdir / "objects").mkdir(exist_ok=True)
        (regdir / "tmp").mkdir(exist_ok=True)
        config = {
            "core": {"format": FORMAT_VERSION},
            "metadata": {"url": "sqlite:///tvc.db"},
            "store": {"url": "objects"},
        }
        durable.write_bytes(regdir / "config.toml", tomli_w.dumps(config).encode())
        return cls(root)

    def _read_config(self) -> dict[str, Any]:
        try:
            return tomllib.loads((self.dir / "config.toml").read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise NotARegistryError(f"{self.dir}/config.toml: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- locking ---------------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the writer lock. A second writer waits up to TVC_LOCK_TIMEOUT seconds."""
        timeout = float(os.environ.get("TVC_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT))
        lock = filelock.FileLock(str(self.dir / "lock"), timeout=timeout)
        try:
            lock.acquire()
        except filelock.Timeout as exc:
            raise LockTimeoutError(
                f"another tvc process is writing to {self.dir} (waited {timeout:g} s for "
                f"its lock); try again later or set TVC_LOCK_TIMEOUT"
            ) from exc
        try:
            yield
        finally:
            lock.release()

    # -- models and refs -------------------------------------------------------------------
    def _model_id(self, conn: sa.Connection, model: str, *, create: bool = False) -> int:
        names.check_model_name(model)
        mid = conn.execute(sa.select(s.models.c.id).where(s.models.c.name == model)).scalar()
        if mid is None:
            if not create:
                known = conn.execute(sa.select(s.models.c.name).order_by(s.models.c.name))
                listed = ", ".join(r[0] for r in known) or "none yet"
                raise UnknownRefError(f"unknown model {model!r} (models: {listed})")
            mid = conn.execute(
                s.models.insert().values(name=model, created=time.time())
            ).inserted_primary_key[0]
        return mid

    def _ref_target(self, conn: sa.Connection, mid: int, kind: str, name: str) -> str | None:
        r = s.refs.c
        q = sa.select(r.version_id).where(r.model_id == mid, r.kind == kind, r.name == name)
        return conn.execute(q).scalar()

    def resolve(self, ref: str | names.Ref, conn: sa.Connection | None = None) -> Version:
        """The version a reference names. Unknown → UnknownRefError; ambiguous → lists them."""
        if conn is None:
            with self.engine.connect() as c:
                return self.resolve(ref, c)
        r = names.parse_ref(ref) if isinstance(ref, str) else ref
        mid = self._model_id(conn, r.model)
        candidates: dict[str, list[str]] = {}  # version id -> how it matched

        m = names.VERSION_RE.match(r.rev)
        if m:
            v = s.versions.c
            q = sa.select(v.id).where(v.model_id == mid, v.number == int(m.group(1)))
            vid = conn.execute(q).scalar()
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
                q = sa.select(v.id).where(v.model_id == mid, v.id.startswith(r.rev))
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
                f"{', '.join(how)} → {self._load_version(conn, vid).ref}"
                for vid, how in candidates.items()
            )
            raise AmbiguousRefError(f"{r} is ambiguous: {listed}")
        vid = next(iter(candidates))
        for step in range(r.ancestors):
            parents = self._parents(conn, vid)
            if not parents:
                raise UnknownRefError(f"{r}: {r.model}@{r.rev}~{step} has no parent")
            vid = parents[0]
        return self._load_version(conn, vid)

    def _parents(self, conn: sa.Connection, vid: str) -> list[str]:
        p = s.version_parents.c
        q = sa.select(p.parent_id).where(p.version_id == vid).order_by(p.position)
        return [row[0] for row in conn.execute(q)]

    def _load_version(self, conn: sa.Connection, vid: str, *, files: bool = True) -> Version:
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
        return version_from_row(row, row.name, self._parents(conn, vid), fs)

    def version(self, vid: str) -> Version:
        with self.engine.connect() as conn:
            return self._load_version(conn, vid)

    # -- manifests -------------------------------------------------------------------------
    def manifest(self, manifest_id: str) -> Manifest:
        cached = self._manifest_cache.get(manifest_id)
        if cached is not None:
            return cached
        with self.engine.connect() as conn:
            body = conn.execute(
                sa.select(s.manifests.c.body).where(s.manifests.c.id == manifest_id)
            ).scalar()
        if body is None:
            raise IntegrityError(f"manifest {manifest_id} is missing")
        m = Manifest.decode(body, manifest_id)
        self._manifest_cache[manifest_id] = m
        return m

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
    ) -> CommitResult:
        """Record ``paths_`` as a new version of ``model`` on ``branch``.

        Every file is parsed (headers only) before anything is written, so a malformed file
        stops the commit with nothing stored. Then chunks are stored, deduplicated against
        everything already in the registry, and delta-encoded against the same tensor piece of
        the parent version (or of ``base``) where that is smaller. ``merge_parents`` (version
        ids) become further parents after the branch head: that is how a merge is recorded.
        ``state`` is the new version's lifecycle state (the registry passes its initial state).
        With ``expected_head`` (a version id) the commit is refused unless the branch still
        points there once the writer lock is held — compare-and-swap for read-modify-commit.
        """
        names.check_model_name(model)
        names.check_ref_name(branch, "branch")
        for t in tags:
            names.check_ref_name(t, "tag")
        progress = progress or NoProgress()
        staged = stage(paths_, parse=parse, allow_unsafe_pickle=allow_unsafe_pickle)

        with self.writing():
            with self.engine.connect() as conn:
                mid = conn.execute(
                    sa.select(s.models.c.id).where(s.models.c.name == model)
                ).scalar()
                parent = None
                if mid is not None:
                    parent = self._ref_target(conn, mid, "branch", branch)
                    if parent is None:
                        parent = self._ref_target(conn, mid, "branch", names.DEFAULT_BRANCH)
                    for t in tags:
                        if self._ref_target(conn, mid, "tag", t):
                            raise ExistsError(f"tag {t!r} already exists on {model}")
                if expected_head is not None and parent != expected_head:
                    raise ConflictError(
                        f"branch {branch} of {model} moved (it is no longer at "
                        f"{expected_head[:12]}); run the operation again"
                    )
                parent_v = self._load_version(conn, parent) if parent else None
                base_v = self.resolve(base, conn) if base else None
                for extra in merge_parents:
                    self._load_version(conn, extra, files=False)  # must exist

            delta_sources = [v for v in (parent_v, base_v) if v is not None]
            session = self.store.session()
            try:
                pieces = delta_pieces(delta_sources, self.manifest)
                entries, new_chunks, total_chunks = store_files(staged, pieces, session, progress)
                return self._record(
                    model=model,
                    branch=branch,
                    parent=parent,
                    merge_parents=list(merge_parents),
                    entries=entries,
                    session=session,
                    message=message,
                    params=params or {},
                    metrics=metrics or {},
                    datasets=datasets or {},
                    code=code,
                    base=base_v.id if base_v else None,
                    tags=tags,
                    state=state,
                    author=author or default_author(),
                    new_chunks=new_chunks,
                    total_chunks=total_chunks,
                )
            except BaseException:
                session.abort()
                raise

    def _record(
        self,
        *,
        model,
        branch,
        parent,
        merge_parents,
        entries,
        session,
        message,
        params,
        metrics,
        datasets,
        code,
        base,
        tags,
        state,
        author,
        new_chunks,
        total_chunks,
    ) -> CommitResult:
        created = time.time()
        files = [fe for fe, _m in entries]
        parents = [parent] if parent else []
        parents += [p for p in merge_parents if p not in parents]
        meta = {
            "message": message,
            "author": author,
            "created": created,
            "params": params,
            "metrics": metrics,
            "datasets": datasets,
            "code": code,
            "base": base,
        }
        vid = version_id(model=model, parents=parents, files=files, **meta)
        size = sum(fe.size for fe in files)
        session.flush()
        new_bytes = session.stored_bytes
        with self.engine.begin() as conn:
            session.index_into(conn)
            mid = self._model_id(conn, model, create=True)
            # Compare-and-swap: the branch must still point where it did when we started.
            if self._ref_target(conn, mid, "branch", branch) not in (parent, None):
                raise UsageError(f"branch {branch} moved during the commit; commit again")
            number = (
                conn.execute(
                    sa.select(sa.func.max(s.versions.c.number)).where(s.versions.c.model_id == mid)
                ).scalar()
                or 0
            ) + 1
            known = {
                r[0]
                for r in conn.execute(
                    sa.select(s.manifests.c.id).where(
                        s.manifests.c.id.in_([m.id for _fe, m in entries])
                    )
                )
            }
            for _fe, m in entries:
                if m.id not in known:
                    conn.execute(s.manifests.insert().values(id=m.id, body=m.encode()))
                    known.add(m.id)
            conn.execute(
                s.versions.insert().values(
                    id=vid, model_id=mid, number=number, state=state, size=size, **meta
                )
            )
            for i, p in enumerate(parents):
                conn.execute(
                    s.version_parents.insert().values(version_id=vid, position=i, parent_id=p)
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
            self._set_ref(conn, mid, "branch", branch, vid)
            for t in tags:
                self._set_ref(conn, mid, "tag", t, vid, actor=author, reason="commit --tag")
            version = self._load_version(conn, vid)
        return CommitResult.of(
            version,
            logical_bytes=size,
            new_bytes=new_bytes,
            new_chunks=new_chunks,
            total_chunks=total_chunks,
        )

    def _set_ref(
        self,
        conn: sa.Connection,
        mid: int,
        kind: str,
        name: str,
        vid: str | None,
        *,
        actor: str | None = None,
        reason: str = "",
        forced: bool = False,
        record: bool | None = None,
        rollback: bool = False,
    ) -> str | None:
        """Point (or, with ``vid`` None, delete) a ref; returns the old target.

        Moves of tags and aliases, and creation/deletion of branches, go to ``ref_events``;
        a branch advancing on commit does not (the version history already says it).
        """
        old = self._ref_target(conn, mid, kind, name)
        r = s.refs.c
        if old is not None:
            conn.execute(s.refs.delete().where(r.model_id == mid, r.kind == kind, r.name == name))
        if vid is not None:
            conn.execute(s.refs.insert().values(model_id=mid, kind=kind, name=name, version_id=vid))
        if record is None:
            record = kind != "branch" or old is None or vid is None
        if record:
            conn.execute(
                s.ref_events.insert().values(
                    model_id=mid,
                    kind=kind,
                    name=name,
                    old_version=old,
                    new_version=vid,
                    actor=actor or default_author(),
                    at=time.time(),
                    reason=reason,
                    forced=forced,
                    rollback=rollback,
                )
            )
        return old

    # -- reading ---------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        mo, v = s.models.c, s.versions.c
        q = (
            sa.select(mo.name, sa.func.count(v.id), sa.func.max(v.number), sa.func.max(v.created))
            .join_from(s.models, s.versions, v.model_id == mo.id, isouter=True)
            .group_by(mo.id)
            .order_by(mo.name)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
            out = []
            for name, count, latest, updated in rows:
                mid = self._model_id(conn, name)
                branches = sorted(
                    r[0]
                    for r in conn.execute(
                        sa.select(s.refs.c.name).where(
                            s.refs.c.model_id == mid, s.refs.c.kind == "branch"
                        )
                    )
                )
                out.append(
                    {
                        "model": name,
                        "versions": count,
                        "latest": f"v{latest}" if latest else None,
                        "updated": updated,
                        "branches": branches,
                    }
                )
        return out

    def log(self, ref: str, n: int | None = None) -> list[Version]:
        """Versions reachable from ``ref`` through parents, newest first (like ``git log``)."""
        with self.engine.connect() as conn:
            start = self.resolve(ref, conn)
            seen = {start.id}
            frontier = [start]
            out: list[Version] = []
            while frontier and (n is None or len(out) < n):
                frontier.sort(key=lambda v: (v.created, v.number))
                v = frontier.pop()
                out.append(v)
                for p in v.parents:
                    if p not in seen:
                        seen.add(p)
                        frontier.append(self._load_version(conn, p, files=False))
            return out

    def show(self, ref: str) -> Version:
        return self.resolve(ref)

    def refs_of(self, model: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            mid = self._model_id(conn, model)
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
        with self.engine.connect() as conn:
            r = s.refs.c
            q = sa.select(r.kind, r.name).where(r.version_id == version.id).order_by(r.kind)
            return [(k, n) for k, n in conn.execute(q)]

    def _file(self, version: Version, path: str) -> FileEntry:
        for fe in version.files:
            if fe.path == path:
                return fe
        listed = ", ".join(f.path for f in version.files[:10])
        raise UnknownRefError(f"{version.ref} has no file {path!r} (files: {listed})")

    def iter_file(self, version: Version, path: str) -> Iterator[bytes | memoryview]:
        """The verified bytes of one file, chunk by chunk (bytes-like blocks)."""
        fe = self._file(version, path)
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
        return worktree.checkout(
            self.store, self.manifest, version, dest_dir, only=only, force=force, progress=progress
        )

    def read(self, ref: str | Version, path: str) -> bytes:
        version = ref if isinstance(ref, Version) else self.resolve(ref)
        return b"".join(self.iter_file(version, path))

    # -- branches and tags -----------------------------------------------------------------
    def _create_ref(self, kind: str, model: str, name: str, ref: str | None, why: str) -> Version:
        names.check_ref_name(name, kind)
        with self.writing(), self.engine.begin() as conn:
            mid = self._model_id(conn, model)
            if self._ref_target(conn, mid, kind, name):
                raise ExistsError(f"{kind} {name!r} already exists on {model}{why}")
            v = self.resolve(f"{model}@{ref}" if ref else model, conn)
            self._set_ref(conn, mid, kind, name, v.id, reason=kind)
            return v

    def _delete_ref(self, kind: str, model: str, name: str) -> None:
        with self.writing(), self.engine.begin() as conn:
            mid = self._model_id(conn, model)
            if not self._ref_target(conn, mid, kind, name):
                raise UnknownRefError(f"{model} has no {kind} {name!r}")
            self._set_ref(conn, mid, kind, name, None, reason=f"{kind} -d")

    def branch(self, model: str, name: str, start: str | None = None) -> Version:
        """Create branch ``name`` at ``start`` (default: the head of main)."""
        return self._create_ref("branch", model, name, start, "")

    def delete_branch(self, model: str, name: str) -> None:
        self._delete_ref("branch", model, name)

    def tag(self, model: str, name: str, ref: str | None = None) -> Version:
        """Tag ``ref`` (default: the head of main) as ``name``; tags never move."""
        return self._create_ref("tag", model, name, ref, " (tags never move)")

    def delete_tag(self, model: str, name: str) -> None:
        self._delete_ref("tag", model, name)

    # -- maintenance -----------------------------------------------------------------------
    def _reachable(self, conn: sa.Connection) -> tuple[set[str], set[str]]:
        """(manifest ids, chunk ids incl. delta bases) that some version uses.

        Every version is a root: versions are immutable records addressable as MODEL@vN, so
        deleting a branch never makes one unreachable.
        """
        mids = {r[0] for r in conn.execute(sa.select(s.version_files.c.manifest_id).distinct())}
        chunk_ids: set[str] = set()
        for mid in mids:
            chunk_ids.update(cid for cid, _n in self.manifest(mid).chunks)
        bases = dict(conn.execute(sa.select(chunks_t.c.id, chunks_t.c.base)).all())
        frontier = list(chunk_ids)
        while frontier:
            b = bases.get(frontier.pop())
            if b and b not in chunk_ids:
                chunk_ids.add(b)
                frontier.append(b)
        return mids, chunk_ids

    def stats(self) -> dict[str, Any]:
        """Logical bytes (what versions contain) against what the store holds, and why.

        Savings split three ways: *dedup* (logical bytes that are chunks stored once),
        *compression* (what codecs saved on unique chunks) and *delta* (what encoding changed
        tensors against their parent saved beyond that). Per model, shared chunks count in full
        for every model that uses them.
        """
        c = chunks_t.c
        with self.engine.connect() as conn:
            f, v, mo = s.version_files.c, s.versions.c, s.models.c
            sizes = {
                row.id: (row.raw_len, row.plain_len, row.stored_len)
                for row in conn.execute(sa.select(c.id, c.raw_len, c.plain_len, c.stored_len))
            }
            per_model: dict[str, dict[str, Any]] = {}
            for name, logical, nver in conn.execute(
                sa.select(mo.name, sa.func.coalesce(sa.func.sum(v.size), 0), sa.func.count(v.id))
                .join_from(s.models, s.versions, v.model_id == mo.id, isouter=True)
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
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(packs_t.c.size), 0))
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

    def fsck(self, *, read_data: bool = False, progress: Progress | None = None) -> dict[str, Any]:
        """Check the invariants of the store and the repo; ``read_data`` re-hashes every byte."""
        from tvc.repo.check import check

        return check(self, read_data=read_data, progress=progress or NoProgress())

    def gc(self, *, dry_run: bool = False) -> dict[str, Any]:
        from tvc.repo.check import collect_garbage

        with self.writing():
            return collect_garbage(self, dry_run=dry_run)


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
