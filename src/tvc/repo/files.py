"""Files in and out of the chunk store: what a commit stores and a checkout writes.

The repository decides *which* files and *which* version (refs, locks, the metadata
transaction); this module moves their bytes. A commit parses every file first
(:func:`stage`) so a malformed one stops it before anything is written, then
:func:`store_files` cuts each file by its format, hands the pieces to a write session —
each with the same piece of the same tensor in the delta sources as its delta base — and
builds the manifests. :func:`write_file` materializes one file from its manifest, chunks
decoded and verified on worker threads and written at their offsets.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tvc.errors import FormatError, IntegrityError, PathError, TvcError
from tvc.repo import paths
from tvc.repo.manifest import Manifest, TensorEntry
from tvc.repo.version import FileEntry, Version
from tvc.store import durable, hashing
from tvc.store.chunkstore import ChunkInfo, ChunkStore, PutItem, WriteSession, ordered_map

if TYPE_CHECKING:
    from tvc import formats


class Progress(Protocol):
    """What long operations report to (the CLI passes a Rich progress bar)."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class Staged:
    """A file to commit, parsed: its stored path, where it is, its layout, its stat then."""

    rel: str
    path: Path
    layout: formats.Layout
    stat: os.stat_result
    listed: paths.Listed | None = None


# (tensor, dtype, shape, piece) -> chunk id, per stored path ("" = any path: renamed files)
Pieces = dict[str, dict[tuple[Any, ...], str]]


def stage(
    given: paths.PathArgs, *, parse: bool = True, allow_unsafe_pickle: bool = False
) -> list[Staged]:
    """Collect and parse (headers only) every file ``given`` contributes; nothing is stored.

    Each file is parsed through a descriptor of exactly the listed file (see
    :func:`paths.open_listed`), and refused if it changed while being parsed.
    """
    staged = []
    with _ByDescriptor() as by_fd, paths.Opener() as opener:
        for item in paths.listing(given):
            fd = opener.open(item)
            try:
                before = os.fstat(fd)
                paths.unchanged(item, item.st, before)
                layout = by_fd.parse(fd, item.shown, parse, allow_unsafe_pickle)
                paths.unchanged(item, before, os.fstat(fd))
            finally:
                os.close(fd)
            staged.append(Staged(item.rel, Path(item.shown), layout, before, item))
    return staged


class _ByDescriptor:
    """Let the format parsers, which open files by name, read an already open descriptor.

    A name in a private directory is a symlink to ``/proc/self/fd/N``, which reopens exactly
    the open file whatever happens to its path meanwhile. N is one descriptor slot each file
    is ``dup2``-ed into, and the name keeps only the file's suffix (``f.safetensors``), which
    is what parsers choose by: one symlink per suffix, not one per file. Messages are given
    back the real path. Without ``/proc`` (not Linux) the parsers get the path itself, and the
    identity and stat checks around them (:func:`stage`) are what is left.
    """

    PREFIX = "tvc-parse-"

    def __enter__(self) -> _ByDescriptor:
        self.dir = None
        self.slot = -1
        self.aliases: dict[str, str] = {}
        if os.path.isdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # no usable TMPDIR: by path, checked around
                self.dir = tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-")
                _remove_dead(tempfile.gettempdir(), self.PREFIX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.slot >= 0:
            os.close(self.slot)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def parse(self, fd: int, shown: str, parse: bool, allow_unsafe_pickle: bool) -> formats.Layout:
        from tvc import formats  # the parsers (numpy among them): only a commit needs them

        if self.dir is None:
            return formats.parse_file(shown, parse=parse, allow_unsafe_pickle=allow_unsafe_pickle)
        if self.slot < 0:
            self.slot = os.dup(fd)
        else:
            os.dup2(fd, self.slot, inheritable=False)
        _stem, dot, suffix = os.path.basename(shown).lstrip(".").partition(".")
        alias = self.aliases.get(suffix)
        if alias is None:
            alias = os.path.join(self.dir, "f" + dot + suffix)
            os.symlink(f"/proc/self/fd/{self.slot}", alias)
            self.aliases[suffix] = alias
        try:
            return formats.parse_file(alias, parse=parse, allow_unsafe_pickle=allow_unsafe_pickle)
        except TvcError as exc:
            exc.message = exc.message.replace(alias, shown)
            exc.args = (exc.message,)
            raise


def _remove_dead(tmp: str, prefix: str) -> None:
    """Remove our ``<prefix><pid>-*`` directories whose process is gone (killed mid-commit)."""
    with os.scandir(tmp) as entries:
        for e in entries:
            pid = e.name[len(prefix) :].partition("-")[0]
            if not e.name.startswith(prefix) or not pid.isdigit():
                continue
            try:
                if e.stat(follow_symlinks=False).st_uid != os.geteuid():
                    continue
                os.kill(int(pid), 0)
                continue  # alive (or reused: left for a later run)
            except ProcessLookupError:
                shutil.rmtree(e.path, ignore_errors=True)
            except OSError:
                continue


def delta_pieces(sources: list[Version], manifest: Callable[[str], Manifest]) -> Pieces:
    """Every tensor piece of the delta sources (parent first, then ``--base``), by key."""
    pieces: Pieces = {}
    for src in sources:
        for fe in src.files:
            for key, cid in manifest(fe.manifest_id).piece_map().items():
                pieces.setdefault(fe.path, {}).setdefault(key, cid)
                pieces.setdefault("", {}).setdefault(key, cid)
    return pieces


def store_files(
    staged: list[Staged], pieces: Pieces, session: WriteSession, progress: Progress
) -> tuple[list[tuple[FileEntry, Manifest]], int, int]:
    """Store every staged file: (file entry, manifest) each, new chunks, all chunks."""
    session.prefetch(cid for own in pieces.values() for cid in own.values())
    progress.start("commit", sum(st.layout.size for st in staged))
    entries: list[tuple[FileEntry, Manifest]] = []
    new_chunks = total_chunks = 0
    opener = paths.Opener()
    try:
        i = 0
        while i < len(staged):
            if staged[i].layout.size > SMALL_FILE:
                batch = staged[i : i + 1]
                stored = [_store_file(staged[i], pieces, session, progress, opener)]
                i += 1
            else:
                j, size = i, 0
                while (
                    j < len(staged)
                    and staged[j].layout.size <= SMALL_FILE
                    and j - i < SMALL_BATCH
                    and size < SMALL_BATCH_BYTES
                ):
                    size += staged[j].layout.size
                    j += 1
                batch = staged[i:j]
                stored = _store_small(batch, pieces, session, progress, opener)
                i = j
            for st, (manifest, n_new, n_all) in zip(batch, stored, strict=True):
                new_chunks += n_new
                total_chunks += n_all
                fe = FileEntry(st.rel, manifest.size, manifest.digest, manifest.format, manifest.id)
                entries.append((fe, manifest))
    finally:
        opener.close()
        progress.finish()
    return entries, new_chunks, total_chunks


# Files up to SMALL_FILE are read whole on this thread and stored in batches (of SMALL_BATCH
# files or SMALL_BATCH_BYTES): one index lookup for the batch instead of a query per file, and
# no round trip per file to the worker threads, which for a 1 KB file cost more than its work.
SMALL_FILE = 64 * 1024
SMALL_BATCH = 2048
SMALL_BATCH_BYTES = 32 << 20


def _store_small(
    batch: list[Staged],
    pieces: Pieces,
    session: WriteSession,
    progress: Progress,
    opener: paths.Opener,
) -> list[tuple[Manifest, int, int]]:
    """Store a batch of small files (see ``SMALL_FILE``), with the checks of :func:`_store_file`."""
    from tvc import formats

    read: list[tuple[Staged, bytes, list[PutItem]]] = []
    for st in batch:
        layout = st.layout
        own = pieces.get(st.rel, {})
        anywhere = pieces.get("", {})
        listed = st.listed or paths.listing(st.path)[0]
        fd = opener.open(listed)
        try:
            now = os.fstat(fd)
            paths.unchanged(listed, st.stat, now)
            if now.st_size != layout.size:
                raise PathError(f"{st.path}: file changed while committing; commit it again")
            data = _read_exactly(fd, layout.size, st.path)
            # Rewritten in place while read (same size): stored torn unless caught here.
            paths.unchanged(listed, now, os.fstat(fd))
        finally:
            os.close(fd)
        shapes = {t.name: (t.dtype, tuple(t.shape)) for t in layout.tensors}
        items = []
        view = memoryview(data)
        for sp in formats.iter_chunks(data, layout):
            base = None
            if sp.tensor is not None and sp.tensor in shapes:
                dtype, shape = shapes[sp.tensor]
                key = (sp.tensor, dtype, shape, sp.piece)
                base = own.get(key) or anywhere.get(key)
            piece = view[sp.offset : sp.offset + sp.length]
            items.append(PutItem(piece, sp.dtype, sp.itemsize, base, hashing.digest(piece)))
        read.append((st, data, items))
    session.lookup(it.id for _st, _d, items in read for it in items)
    results = iter(session.put_many((it for _st, _d, items in read for it in items), inline=True))
    out = []
    for st, data, items in read:
        chunk_list: list[tuple[str, int]] = []
        n_new = 0
        for _ in items:
            res = next(results)
            chunk_list.append((res.id, res.raw_len))
            n_new += res.new
            progress.advance(res.raw_len)
        layout = st.layout
        tensors = [
            TensorEntry(t.name, t.dtype, tuple(t.shape), t.offset, t.length) for t in layout.tensors
        ]
        manifest = Manifest(
            size=layout.size,
            digest=hashing.digest(data),
            format=layout.format,
            chunks=chunk_list,
            tensors=tensors,
            metadata=layout.metadata,
            sha256=hashlib.sha256(data).hexdigest(),
        )
        out.append((manifest, n_new, len(chunk_list)))
    return out


def _read_exactly(fd: int, size: int, where: Path) -> bytes:
    parts, offset = [], 0
    while offset < size:
        block = os.pread(fd, size - offset, offset)
        if not block:
            break
        parts.append(block)
        offset += len(block)
    data = b"".join(parts) if len(parts) != 1 else parts[0]
    if len(data) != size or os.pread(fd, 1, size):
        raise PathError(f"{where}: file changed while committing; commit it again")
    return data


def _store_file(
    st: Staged, pieces: Pieces, session: WriteSession, progress: Progress, opener: paths.Opener
) -> tuple[Manifest, int, int]:
    from tvc import formats

    layout = st.layout
    own = pieces.get(st.rel, {})
    anywhere = pieces.get("", {})
    whole = hashing.hasher()
    chunk_list: list[tuple[str, int]] = []
    n_new = 0
    listed = st.listed or paths.listing(st.path)[0]
    with os.fdopen(opener.open(listed), "rb") as f:
        now = os.fstat(f.fileno())
        paths.unchanged(listed, st.stat, now)
        if now.st_size != layout.size:
            raise PathError(f"{st.path}: file changed while committing; commit it again")
        fd = f.fileno()
        # CDC reads opaque bytes in windows (tensors need only offsets); never a map, which
        # a file truncated meanwhile would turn into a SIGBUS.
        try:
            specs = list(
                formats.iter_chunks(lambda off, n: os.pread(fd, n, off), layout, size=now.st_size)
            )
        except FormatError as exc:
            raise PathError(f"{st.path}: {exc}; commit it again") from exc
        shapes = {t.name: (t.dtype, tuple(t.shape)) for t in layout.tensors}

        def reader(offset: int, length: int) -> Callable[[], bytes]:
            def read() -> bytes:  # runs on a worker thread
                data = os.pread(fd, length, offset)
                if len(data) != length:
                    raise PathError(f"{st.path}: file changed while committing; commit again")
                return data

            return read

        def items() -> Iterator[PutItem]:
            for sp in specs:
                base = None
                if sp.tensor is not None and sp.tensor in shapes:
                    dtype, shape = shapes[sp.tensor]
                    key = (sp.tensor, dtype, shape, sp.piece)
                    base = own.get(key) or anywhere.get(key)
                yield PutItem(reader(sp.offset, sp.length), sp.dtype, sp.itemsize, base)

        sha = _Sha256Behind()
        try:
            for res in session.put_many(items()):
                whole.update(res.data)
                sha.update(res.data)
                chunk_list.append((res.id, res.raw_len))
                n_new += res.new
                progress.advance(res.raw_len)
        finally:
            sha256 = sha.hexdigest()  # the thread ends either way
        # Rewritten in place while read (same size): stored torn unless caught here.
        paths.unchanged(listed, now, os.fstat(f.fileno()))
    tensors = [
        TensorEntry(t.name, t.dtype, tuple(t.shape), t.offset, t.length) for t in layout.tensors
    ]
    manifest = Manifest(
        size=layout.size,
        digest=whole.hexdigest(),
        format=layout.format,
        chunks=chunk_list,
        tensors=tensors,
        metadata=layout.metadata,
        sha256=sha256,
    )
    return manifest, n_new, len(chunk_list)


class _Sha256Behind:
    """The SHA-256 of a file's blocks, in order, on a thread of its own: hashlib releases the
    GIL, so the commit's loop (BLAKE3, handing chunks to the encoders) does not wait for it.
    At most ``DEPTH`` blocks wait, so memory stays bounded."""

    DEPTH = 8

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._q: queue.Queue[bytes | memoryview | None] = queue.Queue(self.DEPTH)
        self._t = threading.Thread(target=self._run, name="tvc-sha256", daemon=True)
        self._t.start()

    def _run(self) -> None:
        while (block := self._q.get()) is not None:
            self._h.update(block)

    def update(self, block: bytes | memoryview) -> None:
        self._q.put(block)

    def hexdigest(self) -> str:
        if self._t.is_alive():
            self._q.put(None)
            self._t.join()
        return self._h.hexdigest()


def write_file(
    store: ChunkStore, manifest: Manifest, target: Path, progress: Progress, where: str
) -> None:
    """Materialize one file at ``target`` (a temp file beside it, renamed into place).

    Checkout does not use this (:mod:`tvc.repo.worktree` writes through descriptors into a
    staging area); kept for callers that write one file to a path they chose.
    """
    with durable.atomic_file(target, sync=False) as out:
        write_into(store, manifest, out.fileno(), progress, where)


def write_into(
    store: ChunkStore,
    manifest: Manifest,
    fd: int,
    progress: Progress,
    where: str,
    infos: dict[str, ChunkInfo] | None = None,
) -> None:
    """Decode, verify and write chunks on worker threads, each at its offset of ``fd``.

    Every chunk is verified against its id and the manifest against its own id, so the
    assembled file is the committed one without hashing it a second time. Materialized files
    are not fsynced: they are copies, not repository state (a re-checkout restores them).
    ``where`` (``model@vN:path``) goes into integrity errors. ``infos``: the chunks' index rows
    (bases included) when the caller looked them up for many files at once. A small file (see
    ``SMALL_FILE``) is written on this thread: a worker round trip costs more than its work.
    """
    if infos is None:
        infos = store.infos((cid for cid, _n in manifest.chunks), with_bases=True)
    jobs = list(zip(manifest.chunks, manifest.starts, strict=True))
    os.ftruncate(fd, manifest.size)

    def land(job: tuple[tuple[str, int], int]) -> int:
        (cid, n), offset = job
        info = infos.get(cid)
        if info is None:
            raise IntegrityError(f"chunk {cid} is not in the index")
        data = store.read(cid, info, infos)
        view = memoryview(data).cast("B")
        while view:  # pwrite may write less than asked (signals, some file systems)
            done = os.pwrite(fd, view, offset)
            view, offset = view[done:], offset + done
        return n

    try:
        workers = 1 if manifest.size <= SMALL_FILE else store.workers
        for n in ordered_map(land, jobs, workers):
            progress.advance(n)
    except IntegrityError as exc:
        raise IntegrityError(f"{exc} (in {where})") from exc


def same_file(target: Path, fe: FileEntry) -> bool:
    """Whether ``target`` already holds exactly ``fe``'s bytes (then checkout leaves it)."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return same_content(fd, fe)
    finally:
        os.close(fd)


def same_content(fd: int, fe: FileEntry) -> bool:
    """Whether the open file ``fd`` holds exactly ``fe``'s bytes (size first, then BLAKE3)."""
    if os.fstat(fd).st_size != fe.size:
        return False
    h = hashing.hasher()
    offset = 0
    while block := os.pread(fd, 1 << 22, offset):
        h.update(block)
        offset += len(block)
    return h.hexdigest() == fe.digest
