"""The chunk store: put and get chunks by id, in packs on a backend, indexed in the metadata DB.

Writes happen in a :class:`WriteSession` (one per commit), outside any registry-wide lock:
chunks are hashed, checked against the index, encoded and appended to a pack on worker threads
(BLAKE3, zstd and numpy release the GIL), packs are made durable as they fill, and the caller
indexes them inside its own short transaction with :meth:`WriteSession.index_into`. Reads are
always verified: a chunk whose decoded bytes do not hash to its id raises
:class:`IntegrityError`.

Dedup trusts the index only as far as it is cheap to check: a chunk counts as stored when its row
is not marked damaged (fsck marks what it found missing or corrupt) and its pack is present with
its recorded size (one stat per pack). Otherwise the session stores the bytes again and the
row is pointed at the new copy, so committing the original file again repairs every version
that uses it. A session holds an *upload lease* while it writes (table ``uploads``): gc leaves
every unindexed pack a live session may have written.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

from tvc.errors import IntegrityError, StorageError
from tvc.store import hashing, index
from tvc.store.backends.base import Backend, NotFound
from tvc.store.packs import (
    ENTRY,
    Kind,
    PackEntry,
    PackWriter,
    pack_object_name,
    parse_entry_header,
)

# A delta chunk is decoded from its base. The store writes every delta against a full chunk (its
# keyframe, see WriteSession._keyframe), so chains it writes are one delta deep; reading accepts
# chains up to this bound and fsck flags longer ones.
MAX_DELTA_DEPTH = 4
PACK_TARGET = 64 * 1024 * 1024
# An upload lease lasts this long and is renewed at a third of it while the session runs.
LEASE_SECONDS = 600.0
# What the caller's thread hands the pack thread at once (entries, payload bytes).
BATCH_ENTRIES = 256
BATCH_BYTES = 4 << 20

if TYPE_CHECKING:
    import numpy as np

    from tvc.store import codecs

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ChunkInfo:
    id: str
    pack: str
    offset: int
    stored_len: int
    raw_len: int
    codec: int
    base: str | None
    depth: int
    plain_len: int
    damaged: bool = False
    kind: int = Kind.CHUNK  # a chunk, or a record kept in packs (manifest, version)


@dataclass(frozen=True)
class PutItem:
    # The bytes, or a function that reads them: then the read happens on a worker thread too.
    data: bytes | memoryview | Callable[[], bytes]
    dtype: str | None = None
    itemsize: int = 0
    base: str | None = None  # a chunk id to delta-encode against, when one is known
    id: str | None = None  # the BLAKE3 of ``data`` when the caller hashed it already


@dataclass(frozen=True)
class PutResult:
    id: str
    raw_len: int
    stored_len: int  # 0 when the chunk was already stored (dedup)
    new: bool
    delta: bool = False
    # The chunk's bytes, handed back so the caller can hash the whole file in order.
    data: bytes | memoryview | None = field(default=None, repr=False, compare=False)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


# Results that may wait, per worker, for the caller to take them in order. Pieces differ in cost
# (a 4 MiB piece beside a 1.5 KiB bias), so a short window stalls every worker behind one slow
# piece: on the bench's FP32 chain 2 in flight per worker left the cores idle a fifth of the time,
# 8 per worker made the commits 10-15 % faster. Pieces are at most 4 MiB (formats.PIECE_SIZE),
# so the window holds at most 64 MiB of raw bytes per worker.
WINDOW_PER_WORKER = 8

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_on_worker = threading.local()


def _mark_worker() -> None:
    _on_worker.active = True


def _shared_pool(workers: int) -> ThreadPoolExecutor:
    """The process's worker threads, made on first use and kept.

    Kept rather than made per call so each thread's scratch buffers and zstd contexts (see
    ``codecs``) are made and faulted in once per process, not once per commit (the CLI helper's
    spare starts them in its warm-up). A caller that wants more workers than the pool has gets
    a larger pool; the old one is dropped, not shut down, since another thread may still be
    submitting to it, and its threads exit once nobody holds it.
    """
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            _pool = ThreadPoolExecutor(
                workers, thread_name_prefix="tvc-worker", initializer=_mark_worker
            )
            _pool_size = workers
        return _pool


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start over."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map`` on the shared worker threads, in input order, with a bounded window.

    Called from one of those threads (a task that maps again) it runs in line, since waiting
    there for the pool could wait for itself.
    """
    if workers <= 1 or getattr(_on_worker, "active", False):
        yield from map(fn, items)
        return
    pool = _shared_pool(workers)
    window: collections.deque[Future[R]] = collections.deque()
    try:
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= WINDOW_PER_WORKER * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        for fut in window:
            fut.cancel()
        for fut in window:  # nothing of ours may still run once the caller moves on
            if not fut.cancelled():
                with contextlib.suppress(BaseException):
                    fut.result()


class ChunkStore:
    def __init__(
        self, backend: Backend, engine: sa.Engine, staging: Path, workers: int | None = None
    ) -> None:
        self.backend = backend
        self.engine = engine
        self.staging = staging
        self.workers = workers or default_workers()

    # -- index lookups ---------------------------------------------------------------------
    @staticmethod
    def info_query() -> sa.Select:
        """The index rows a :class:`ChunkInfo` is made of (add a WHERE; any connection)."""
        c, p = index.chunks.c, index.packs.c
        return sa.select(
            c.id,
            p.name,
            c.offset,
            c.stored_len,
            c.raw_len,
            c.codec,
            c.base,
            c.depth,
            c.plain_len,
            c.damaged,
            c.kind,
        ).join_from(index.chunks, index.packs, c.pack_id == p.id)

    def info(self, cid: str) -> ChunkInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(self.info_query().where(index.chunks.c.id == cid)).first()
        return ChunkInfo(*row) if row else None

    def infos(self, ids: Iterable[str], *, with_bases: bool = False) -> dict[str, ChunkInfo]:
        """Index rows of ``ids`` in batched queries; ``with_bases`` adds their delta chains, so
        reading them later needs no query per chunk."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, ChunkInfo] = {}
        with self.engine.connect() as conn:
            while wanted:
                for i in range(0, len(wanted), 500):
                    q = self.info_query().where(index.chunks.c.id.in_(wanted[i : i + 500]))
                    for row in conn.execute(q):
                        found[row[0]] = ChunkInfo(*row)
                if not with_bases:
                    break
                bases = {i.base for i in found.values() if i.base and i.base not in found}
                wanted = list(bases)
        return found

    _HAS = sa.select(index.chunks.c.id).where(index.chunks.c.id == sa.bindparam("cid"))

    def has(self, cid: str) -> bool:
        with self.engine.connect() as conn:  # one statement object: 31 µs a call, not 84
            return conn.execute(self._HAS, {"cid": cid}).first() is not None

    # -- reads -----------------------------------------------------------------------------
    def read(
        self,
        cid: str,
        info: ChunkInfo | None = None,
        known: dict[str, ChunkInfo] | None = None,
        *,
        verify: bool = True,
        out: np.ndarray | None = None,
    ) -> codecs.Buffer:
        """The verified raw bytes of chunk ``cid`` (``known``: prefetched rows, bases included).

        ``out``: decode into this buffer (see :func:`codecs.decode`).

        A delta's base is decoded without hashing it: the delta's own hash, checked on the
        result, covers the base's bytes too (a base that decodes wrong cannot give the right
        result), so hashing both would only spend a second BLAKE3 pass on every delta read.
        ``verify=False`` is for the same reason safe for a delta *source*: a delta is coded
        against the bytes this returns, and decoding it later gets the same bytes back from the
        same payload; any later change to the payload fails the delta's hash.
        """
        info = info or (known.get(cid) if known else None) or self.info(cid)
        if info is None:
            raise IntegrityError(f"chunk {cid} is not in the index")
        try:
            # The entry header comes along: a flipped bit there is caught too, not only in data.
            blob = self.backend.get(
                info.pack, info.offset - ENTRY.size, info.stored_len + ENTRY.size
            )
        except NotFound as exc:
            # gc may have moved the chunk to another pack and deleted this one since our row
            # was read: the index, read again, says where it is now.
            fresh = self.info(cid)
            if fresh is not None and (fresh.pack, fresh.offset) != (info.pack, info.offset):
                return self.read(cid, fresh, known, verify=verify, out=out)
            raise IntegrityError(f"chunk {cid}: its pack {info.pack} is missing") from exc
        except IntegrityError as exc:
            raise IntegrityError(f"chunk {cid}: {exc}") from exc
        if parse_entry_header(blob) != (cid, info.base, info.raw_len, info.stored_len, info.codec):
            raise IntegrityError(f"chunk {cid} in {info.pack}: entry header is damaged")
        payload = memoryview(blob)[ENTRY.size :]
        base = self.read(info.base, None, known, verify=False) if info.base else None
        try:
            from tvc.store import codecs  # numpy and zstd: loaded by the first read, not by `log`

            raw = codecs.decode(info.codec, payload, info.raw_len, base=base, out=out)
        except IntegrityError as exc:
            raise IntegrityError(f"chunk {cid} in {info.pack}: {exc}") from exc
        if len(raw) != info.raw_len or (verify and hashing.digest(raw) != cid):
            raise IntegrityError(f"chunk {cid} in {info.pack}: content does not match its hash")
        return raw

    def read_many(
        self, ids: list[str], known: dict[str, ChunkInfo] | None = None
    ) -> Iterator[codecs.Buffer]:
        """Verified bytes of ``ids`` in order, decoded on worker threads. ``known``: index rows
        prefetched with :meth:`infos` (bases included), so that reading many small things — a
        diff's changed tensors — takes no query each."""
        infos = known if known is not None else {}
        if any(i not in infos for i in ids):
            infos = {**infos, **self.infos(ids, with_bases=True)}
        missing = [i for i in ids if i not in infos]
        if missing:
            raise IntegrityError(f"chunk {missing[0]} is not in the index")
        yield from ordered_map(lambda cid: self.read(cid, infos[cid], infos), ids, self.workers)

    def read_record(self, rid: str) -> bytes:
        """A record (manifest, version) kept in the store: its verified canonical bytes."""
        return bytes(self.read(rid))

    def session(self) -> WriteSession:
        return WriteSession(self)

    # -- what a transaction that references chunks must check --------------------------------
    def claim(self, conn: sa.Connection, ids: Iterable[str]) -> set[str]:
        """Inside a writer's transaction: make sure ``ids`` stay stored; returns those that are
        not (absent, or marked damaged), which the writer must store again.

        This is the writer's half of gc's protocol: gc marks unreferenced rows and later deletes
        only rows still marked; claiming clears the mark in the same transaction that records
        the new reference, and on PostgreSQL the rows are locked (``FOR UPDATE``) until it
        commits, so gc's delete waits and then sees them unmarked. The locks are exclusive and
        taken in id order, as gc takes its own: shared locks upgraded by the UPDATE below
        deadlocked two writers claiming one chunk (several replicas pushing at once).
        """
        c = index.chunks.c
        wanted = sorted(set(ids))
        asked, present = set(wanted), set()
        while wanted:  # the delta bases of what is claimed are claimed too
            bases: set[str] = set()
            for i in range(0, len(wanted), 500):
                batch = wanted[i : i + 500]
                q = sa.select(c.id, c.base).where(c.id.in_(batch), c.damaged.is_(False))
                for cid, base in conn.execute(q.order_by(c.id).with_for_update()):
                    present.add(cid)
                    if base and base not in asked:
                        bases.add(base)
                conn.execute(
                    index.chunks.update()
                    .where(c.id.in_(batch), c.dead_since.is_not(None))
                    .values(dead_since=None)
                )
            asked |= bases
            wanted = sorted(bases)
        return asked - present


@dataclass
class _Prepared:
    id: str
    raw_len: int
    payload: bytes | None  # None: already stored
    data: bytes | memoryview | None = None
    codec: int = 0
    base: str | None = None
    depth: int = 0
    plain_len: int = 0
    kind: int = Kind.CHUNK


class WriteSession:
    """Chunks written by one commit. Index them with :meth:`index_into`, or :meth:`abort`.

    Three stages overlap: the caller's thread feeds work and collects results in order, worker
    threads read, hash and encode, and one pack thread appends payloads to packs and makes full
    packs durable — so a disk that throttles writes or an fsync never stalls the encoders.
    """

    def __init__(self, store: ChunkStore) -> None:
        self.store = store
        self.pending: dict[str, int] = {}  # chunk id -> stored length, written or queued
        self.record_bytes = 0  # of the manifests and version records among them
        self.packs: list[tuple[str, int, list[PackEntry]]] = []  # (object name, size, entries)
        self._writer: PackWriter | None = None  # owned by the pack thread
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        # Entries go to the pack thread in batches: a hand-over per 1 KB chunk (a lock and a
        # thread switch) cost more than writing it.
        self._batch: list[_Prepared] = []
        self._batch_bytes = 0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._discard = False
        self._infos: dict[str, ChunkInfo] = {}  # prefetched index rows, read by the workers
        self._absent: set[str] = set()  # ids a batched lookup found not indexed
        self._packs_ok: dict[str, bool] = {}  # pack name -> present with its recorded size
        self._sizes: dict[str, int] = {}
        # Chunks whose indexed copy was missing or damaged and that this session stored again:
        # their rows are pointed at the new copy when the session is indexed.
        self.healed: set[str] = set()
        # Must be stored even if the index has them (a transaction found them gone).
        self.force: set[str] = set()
        self.lease: str | None = None
        self._lease_stop = threading.Event()
        self._lease_thread: threading.Thread | None = None

    def prefetch(self, ids: Iterable[str]) -> None:
        """Load the index rows of chunks this session will meet (the delta sources' pieces).

        One batched query instead of two or three per chunk on the worker threads: those are
        pure Python and hold the GIL, which the encoders need between their numpy and zstd
        calls (on a BF16 commit they were a quarter of the time). Call before ``put_many``.
        """
        self._infos.update(self.store.infos(ids, with_bases=True))

    def lookup(self, ids: Iterable[str]) -> None:
        """Look ``ids`` up in the index in batched queries, remembering those it lacks.

        Many small files are one chunk each: without this, each costs a query (a transaction
        of its own, ≈ 0.5 ms) to learn that it is new. An id found absent here and indexed by
        another writer meanwhile is stored a second time, which is harmless: the first row
        wins and gc reclaims the copy.
        """
        wanted = [i for i in dict.fromkeys(ids) if i not in self._infos and i not in self._absent]
        if not wanted:
            return
        found = self.store.infos(wanted, with_bases=True)
        self._infos.update(found)
        self._absent.update(i for i in wanted if i not in found)

    def _info(self, cid: str) -> ChunkInfo | None:
        info = self._infos.get(cid)
        if info is not None:
            return info
        return None if cid in self._absent else self.store.info(cid)

    def _pack_present(self, name: str) -> bool:
        ok = self._packs_ok.get(name)
        if ok is None:
            try:
                ok = self.store.backend.size(name) == self._pack_size(name)
            except StorageError:
                ok = False
            self._packs_ok[name] = ok
        return ok

    def _pack_size(self, name: str) -> int:
        size = self._sizes.get(name)
        if size is None:
            with self.store.engine.connect() as conn:
                q = sa.select(index.packs.c.size).where(index.packs.c.name == name)
                size = conn.execute(q).scalar()
            self._sizes[name] = size if size is not None else -1
        return self._sizes[name]

    def _usable(self, info: ChunkInfo | None, depth: int = 0) -> bool:
        """Whether the indexed copy can be trusted for dedup: not marked damaged, its pack (and
        its delta base's) present. Checked once per pack, so it costs a stat per pack."""
        if info is None or info.damaged or depth > MAX_DELTA_DEPTH:
            return False
        if not self._pack_present(info.pack):
            return False
        return info.base is None or self._usable(self._info(info.base), depth + 1)

    def _known(self, cid: str) -> bool:
        if cid in self.pending:
            return True
        if cid in self.force:
            return False
        info = self._info(cid)
        if info is None:
            return False
        if self._usable(info):
            return True
        self.healed.add(cid)
        return False

    def _prepare(self, item: PutItem) -> _Prepared:
        data = item.data() if callable(item.data) else item.data
        cid = item.id or hashing.digest(data)
        if self._known(cid):
            return _Prepared(cid, len(data), None, data)
        from tvc.store import codecs

        key = self._keyframe(item.base) if item.base and item.base != cid else None
        if key is not None and key.raw_len != len(data):
            key = None
        base = None
        if key is not None:  # read only to encode against: into this thread's reused buffer
            try:
                base = self.store.read(
                    key.id, key, verify=False, out=codecs.scratch("keyframe", key.raw_len)
                )
            except IntegrityError:  # an unreadable keyframe: the piece is stored plain
                key = None
        codec, payload, plain_len = codecs.encode_measured(
            data, dtype=item.dtype, base=base, plain_hint=key.plain_len if key else None
        )
        prepared = _Prepared(cid, len(data), payload, data, int(codec), plain_len=plain_len)
        if codec == codecs.Codec.DELTA and key is not None:
            prepared.base, prepared.depth = key.id, 1
        return prepared

    def _keyframe(self, cid: str) -> ChunkInfo | None:
        """The full (non-delta) chunk at the root of ``cid``'s delta chain: new deltas' base.

        Coding against the keyframe rather than the parent's piece itself keeps every chain one
        delta deep: a commit decodes one base per piece instead of a chain, a checkout at most
        two payloads, and there is no periodic full copy when a chain reaches its bound. On the
        bench's MiniLM fine-tunes it costs 0.8 % (FP32) to 3 % (BF16) more bytes than deltas
        against the parent, and a chain that drifts far enough from its keyframe starts a new
        one by itself: the delta is kept only when it is smaller than the plain encodings.
        """
        info = self._info(cid)
        for _ in range(MAX_DELTA_DEPTH):
            if info is None or info.base is None:
                break
            info = self._info(info.base)
        if info is None or info.base is not None or not self._usable(info):
            return None  # no trustworthy keyframe: store the piece plain
        return info

    def put_records(self, kind: Kind, records: list[bytes]) -> list[str]:
        """:meth:`put_record` for many records, with one batched index lookup for all."""
        self.lookup(hashing.digest(r) for r in records)
        return [self.put_record(kind, r) for r in records]

    def put_record(self, kind: Kind, data: bytes) -> str:
        """Keep a repo record (manifest, version: canonical bytes) in this session's packs;
        returns its id. Records are objects like chunks: deduplicated by id, verified on read."""
        rid = hashing.digest(data)
        if not self._known(rid):
            from tvc.store import codecs

            codec, payload, plain_len = codecs.encode_measured(data)
            self._land(
                _Prepared(rid, len(data), payload, None, int(codec), None, 0, plain_len, kind)
            )
            self.record_bytes += len(payload)
        return rid

    def _land(self, p: _Prepared) -> PutResult:
        if p.payload is None or p.id in self.pending:
            return PutResult(p.id, p.raw_len, 0, new=False, data=p.data)
        self._raise_pack_error()
        self._take_lease()
        if self._thread is None:
            self._thread = threading.Thread(target=self._pack_loop, name="tvc-pack", daemon=True)
            self._thread.start()
        self.pending[p.id] = len(p.payload)
        self._batch.append(p)
        self._batch_bytes += len(p.payload)
        if len(self._batch) >= BATCH_ENTRIES or self._batch_bytes >= BATCH_BYTES:
            self._send()
        delta = p.base is not None
        return PutResult(p.id, p.raw_len, len(p.payload), new=True, delta=delta, data=p.data)

    def _send(self) -> None:
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._queue.put(batch)

    # -- the pack thread -------------------------------------------------------------------
    def _pack_loop(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                if self._error is not None or self._discard:
                    continue
                if batch == "flush":
                    self._finish_pack()
                    continue
                for job in batch:
                    if self._writer is None:
                        self._writer = PackWriter(self.store.staging)
                    self._writer.add(
                        job.id,
                        job.payload,
                        job.raw_len,
                        job.codec,
                        job.base,
                        job.depth,
                        job.plain_len,
                        job.kind,
                    )
                    if self._writer.size >= PACK_TARGET:
                        self._finish_pack()
            except BaseException as exc:  # handed to the caller's thread at the next call
                self._error = exc
            finally:
                self._queue.task_done()

    def _finish_pack(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            digest = writer.finish()
            name = pack_object_name(digest)
            self.store.backend.put(name, writer.path)
        except BaseException:
            writer.discard()
            raise
        with contextlib.suppress(OSError):
            os.unlink(writer.path)  # already renamed away by a local backend
        self.packs.append((name, writer.size, writer.entries))

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _raise_pack_error(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the caller's thread ---------------------------------------------------------------
    def put_many(self, items: Iterable[PutItem], *, inline: bool = False) -> Iterator[PutResult]:
        """Store ``items``; yields one result per item, in order.

        ``inline``: prepare them on this thread. For small items (a few KB) a round trip to a
        worker thread costs more than the hashing and encoding it would move off this one.
        """
        workers = 1 if inline else self.store.workers
        for prepared in ordered_map(self._prepare, items, workers):
            yield self._land(prepared)

    def put(self, item: PutItem) -> PutResult:
        return self._land(self._prepare(item))

    def flush(self) -> None:
        """Wait until every queued chunk is in a durable pack in the backend (still unindexed)."""
        if self._thread is not None:
            self._send()
            self._queue.put("flush")
            self._stop()
        self._raise_pack_error()

    def index_into(self, conn: sa.Connection) -> None:
        """Index every pack of this session, inside the caller's transaction, and end the
        session's upload lease there too (the packs are indexed from then on)."""
        self.flush()
        now = time.time()
        for name, size, entries in self.packs:
            pack_id = conn.execute(
                index.packs.insert().values(name=name, size=size, created=now)
            ).inserted_primary_key[0]
            rows = [entry_row(e, pack_id) for e in entries]
            index.insert_new(conn, index.chunks, [r for r in rows if r["id"] not in self.healed])
            for r in rows:  # a copy stored again replaces the missing or damaged one
                if r["id"] in self.healed:
                    c = index.chunks.c
                    conn.execute(index.chunks.update().where(c.id == r["id"]).values(**r))
                    index.insert_new(conn, index.chunks, [r])
        if self.lease is not None:
            conn.execute(index.uploads.delete().where(index.uploads.c.id == self.lease))

    def _take_lease(self) -> None:
        """Register this session as an upload in progress before its first pack is written."""
        if self.lease is not None:
            return
        self.lease = uuid.uuid4().hex
        now = time.time()
        with index.db_errors("(upload lease)"), self.store.engine.connect() as conn:
            conn.execution_options(tvc_write=True)
            with conn.begin():
                conn.execute(
                    index.uploads.insert().values(
                        id=self.lease,
                        holder=f"{os.uname().nodename}:{os.getpid()}",
                        started=now,
                        expires=now + LEASE_SECONDS,
                    )
                )
        self._lease_thread = threading.Thread(
            target=self._renew_lease, name="tvc-lease", daemon=True
        )
        self._lease_thread.start()

    def _renew_lease(self) -> None:
        while not self._lease_stop.wait(LEASE_SECONDS / 3):
            # best effort; gc's grace period is the backstop
            with contextlib.suppress(Exception), self.store.engine.connect() as conn:
                conn.execution_options(tvc_write=True)
                with conn.begin():
                    conn.execute(
                        index.uploads.update()
                        .where(index.uploads.c.id == self.lease)
                        .values(expires=time.time() + LEASE_SECONDS)
                    )

    def end_lease(self) -> None:
        """Stop renewing (after the indexing transaction, or when the session is dropped)."""
        self._lease_stop.set()
        if self._lease_thread is not None:
            self._lease_thread.join()
            self._lease_thread = None

    def _drop_lease(self) -> None:
        self.end_lease()
        if self.lease is None:
            return
        with contextlib.suppress(Exception), self.store.engine.connect() as conn:
            conn.execution_options(tvc_write=True)
            with conn.begin():
                conn.execute(index.uploads.delete().where(index.uploads.c.id == self.lease))
        self.lease = None

    def abort(self) -> None:
        """Remove what this session wrote: its packs were never indexed, so nothing uses them."""
        self._discard = True
        self._batch, self._batch_bytes = [], 0
        self._stop()
        if self._writer is not None:
            self._writer.discard()
            self._writer = None
        for name, _size, _entries in self.packs:
            with contextlib.suppress(StorageError):
                self.store.backend.delete(name)
        self.packs.clear()
        self.pending.clear()
        self._drop_lease()

    @property
    def stored_bytes(self) -> int:
        """Payload bytes of the file chunks this session stored (records not counted)."""
        return sum(self.pending.values()) - self.record_bytes


def entry_row(e: PackEntry, pack_id: int) -> dict:
    """The ``chunks`` row that indexes pack entry ``e``."""
    return {
        "id": e.id,
        "pack_id": pack_id,
        "offset": e.offset,
        "stored_len": e.stored_len,
        "raw_len": e.raw_len,
        "codec": e.codec,
        "base": e.base,
        "depth": e.depth,
        "plain_len": e.plain_len,
        "kind": e.kind,
        "damaged": False,
        "dead_since": None,
    }
