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

import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tvc import formats
from tvc.errors import IntegrityError, UsageError
from tvc.repo import paths
from tvc.repo.manifest import Manifest, TensorEntry
from tvc.repo.version import FileEntry, Version
from tvc.store import durable, hashing
from tvc.store.chunkstore import ChunkStore, PutItem, WriteSession, ordered_map


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


# (tensor, dtype, shape, piece) -> chunk id, per stored path ("" = any path: renamed files)
Pieces = dict[str, dict[tuple[Any, ...], str]]


def stage(
    given: paths.PathArgs, *, parse: bool = True, allow_unsafe_pickle: bool = False
) -> list[Staged]:
    """Collect and parse (headers only) every file ``given`` contributes; nothing is stored."""
    staged = []
    for rel, path in paths.collect(given):
        layout = formats.parse_file(path, parse=parse, allow_unsafe_pickle=allow_unsafe_pickle)
        staged.append(Staged(rel, path, layout, path.stat()))
    return staged


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
    try:
        for st in staged:
            manifest, n_new, n_all = _store_file(st, pieces, session, progress)
            new_chunks += n_new
            total_chunks += n_all
            fe = FileEntry(st.rel, manifest.size, manifest.digest, manifest.format, manifest.id)
            entries.append((fe, manifest))
    finally:
        progress.finish()
    return entries, new_chunks, total_chunks


def _store_file(
    st: Staged, pieces: Pieces, session: WriteSession, progress: Progress
) -> tuple[Manifest, int, int]:
    layout = st.layout
    own = pieces.get(st.rel, {})
    anywhere = pieces.get("", {})
    whole = hashing.hasher()
    chunk_list: list[tuple[str, int]] = []
    n_new = 0
    with open(st.path, "rb") as f:
        now = os.fstat(f.fileno())
        if now.st_size != layout.size or now.st_mtime_ns != st.stat.st_mtime_ns:
            raise UsageError(f"{st.path}: file changed while committing")
        # The chunker needs the bytes for CDC (tensors only need offsets): a read-only map.
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if layout.size else b""
        try:
            specs = list(formats.iter_chunks(buf, layout))
            shapes = {t.name: (t.dtype, tuple(t.shape)) for t in layout.tensors}
            fd = f.fileno()

            def reader(offset: int, length: int) -> Callable[[], bytes]:
                def read() -> bytes:  # runs on a worker thread
                    data = os.pread(fd, length, offset)
                    if len(data) != length:
                        raise UsageError(f"{st.path}: file changed while committing")
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

            for res in session.put_many(items()):
                whole.update(res.data)
                chunk_list.append((res.id, res.raw_len))
                n_new += res.new
                progress.advance(res.raw_len)
        finally:
            del buf
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
    )
    return manifest, n_new, len(chunk_list)


def write_file(
    store: ChunkStore, manifest: Manifest, target: Path, progress: Progress, where: str
) -> None:
    """Decode, verify and write chunks on worker threads, each at its offset.

    Every chunk is verified against its id and the manifest against its own id, so the
    assembled file is the committed one without hashing it a second time. Materialized files
    are not fsynced: they are copies, not repository state (a re-checkout restores them).
    ``where`` (``model@vN:path``) goes into integrity errors.
    """
    infos = store.infos((cid for cid, _n in manifest.chunks), with_bases=True)
    jobs = list(zip(manifest.chunks, manifest.starts, strict=True))
    with durable.atomic_file(target, sync=False) as out:
        fd = out.fileno()
        os.ftruncate(fd, manifest.size)

        def land(job: tuple[tuple[str, int], int]) -> int:
            (cid, n), offset = job
            info = infos.get(cid)
            if info is None:
                raise IntegrityError(f"chunk {cid} is not in the index")
            os.pwrite(fd, store.read(cid, info, infos), offset)
            return n

        try:
            for n in ordered_map(land, jobs, store.workers):
                progress.advance(n)
        except IntegrityError as exc:
            raise IntegrityError(f"{exc} (in {where})") from exc


def same_file(target: Path, fe: FileEntry) -> bool:
    """Whether ``target`` already holds exactly ``fe``'s bytes (then checkout leaves it)."""
    try:
        if target.stat().st_size != fe.size:
            return False
    except OSError:
        return False
    h = hashing.hasher()
    with open(target, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest() == fe.digest
