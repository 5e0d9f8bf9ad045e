"""Pack files: append-only containers of encoded objects — chunks, and the repo's records.

Layout (``TVCPACK2``): ``MAGIC`` then entries, each a fixed header (id, base id, raw length,
stored length, codec, delta depth) followed by the encoded payload; then a *trailer*: one row per
entry (id, base, payload offset, lengths, codec, depth, kind, plain length), and a fixed footer
that says where the trailer starts. The metadata DB indexes every entry, but a pack describes
itself: ``tvc fsck --rebuild-index`` reads only the trailers (one ranged read per pack, as
git's ``.idx``) to rebuild the index, and ``fsck --read-data`` walks the entries themselves.
Besides file chunks a pack holds the records the repo keeps in the store so that the DB can be
rebuilt from it: manifests and versions (see :class:`Kind`). A pack is named by the BLAKE3 of its
bytes, so a pack whose content changed no longer matches its name. Packs written before the
trailer existed (``TVCPACK1``) hold chunks only and are read by walking their entries.
"""

from __future__ import annotations

import contextlib
import enum
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tvc.errors import IntegrityError
from tvc.store import durable, hashing
from tvc.store.backends.base import Backend

MAGIC_V1 = b"TVCPACK1"
MAGIC = b"TVCPACK2"
ENTRY = struct.Struct("<32s32sQQBB")  # id, base (zeros if none), raw_len, stored_len, codec, depth
# Trailer row: id, base, payload offset, raw_len, stored_len, codec, depth, kind, plain_len.
TRAILER_ROW = struct.Struct("<32s32sQQQBBBQ")
FOOTER = struct.Struct("<QI8s")  # trailer offset, entry count, magic
FOOTER_MAGIC = b"TVCINDEX"
_NO_BASE = bytes(32)


class Kind(enum.IntEnum):
    """What a pack entry holds. Records are stored like chunks (named by the BLAKE3 of their
    canonical bytes, encoded by the same codecs), so one mechanism writes, reads, verifies and
    collects them all."""

    CHUNK = 0
    MANIFEST = 1
    VERSION = 2


def pack_object_name(digest: str) -> str:
    return f"packs/{digest[:2]}/{digest}.pack"


def digest_of_object_name(name: str) -> str:
    return name.rsplit("/", 1)[-1].removesuffix(".pack")


@dataclass(frozen=True)
class PackEntry:
    id: str
    offset: int  # of the payload, within the pack
    stored_len: int
    raw_len: int
    codec: int
    base: str | None
    depth: int
    plain_len: int = 0
    kind: int = Kind.CHUNK


class PackWriter:
    """Streams entries into a temp file, hashing as it goes; ``finish`` returns its final name."""

    def __init__(self, staging: Path) -> None:
        try:
            staging.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix="pack-", suffix=durable.TMP_SUFFIX, dir=staging)
        except OSError as exc:
            raise durable.storage_error(exc, f"cannot write a pack in {staging}") from exc
        durable.share_mode(fd)
        self.path = Path(tmp)
        self._f = os.fdopen(fd, "wb")
        self._hash = hashing.hasher()
        self.size = 0
        self.entries: list[PackEntry] = []
        self._write(MAGIC)

    def _write(self, data: bytes | memoryview) -> None:
        try:
            self._f.write(data)
        except OSError as exc:
            raise durable.storage_error(exc, "cannot write pack") from exc
        self._hash.update(data)
        self.size += len(data)

    def add(
        self,
        cid: str,
        payload: bytes,
        raw_len: int,
        codec: int,
        base: str | None,
        depth: int,
        plain_len: int,
        kind: int = Kind.CHUNK,
    ) -> PackEntry:
        header = ENTRY.pack(
            bytes.fromhex(cid),
            bytes.fromhex(base) if base else _NO_BASE,
            raw_len,
            len(payload),
            codec,
            depth,
        )
        self._write(header)
        entry = PackEntry(
            cid, self.size, len(payload), raw_len, codec, base, depth, plain_len, int(kind)
        )
        self._write(payload)
        self.entries.append(entry)
        return entry

    def finish(self) -> str:
        """Write the trailer, fsync and close; returns the pack digest (its name). The caller
        moves the file into a backend."""
        trailer_at = self.size
        rows = bytearray()
        for e in self.entries:
            rows += TRAILER_ROW.pack(
                bytes.fromhex(e.id),
                bytes.fromhex(e.base) if e.base else _NO_BASE,
                e.offset,
                e.raw_len,
                e.stored_len,
                e.codec,
                e.depth,
                e.kind,
                e.plain_len,
            )
        self._write(bytes(rows))
        self._write(FOOTER.pack(trailer_at, len(self.entries), FOOTER_MAGIC))
        try:
            durable.fsync_file(self._f)
            durable.release_cached(self._f)
            self._f.close()
        except OSError as exc:
            raise durable.storage_error(exc, "cannot write pack") from exc
        return self._hash.hexdigest()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def parse_entry_header(blob: bytes | memoryview) -> tuple[str, str | None, int, int, int]:
    """(id, base, raw_len, stored_len, codec) from the header at the start of ``blob``."""
    raw_id, raw_base, raw_len, stored_len, codec, _depth = ENTRY.unpack_from(blob, 0)
    return (
        raw_id.hex(),
        None if raw_base == _NO_BASE else raw_base.hex(),
        raw_len,
        stored_len,
        codec,
    )


def parse_footer(tail: bytes, size: int, name: str = "pack") -> tuple[int, int]:
    """(trailer offset, entry count) from the last ``FOOTER.size`` bytes of a v2 pack."""
    if len(tail) != FOOTER.size:
        raise IntegrityError(f"{name}: too short for a pack footer")
    at, count, magic = FOOTER.unpack(tail)
    if magic != FOOTER_MAGIC or at + count * TRAILER_ROW.size + FOOTER.size != size:
        raise IntegrityError(f"{name}: damaged pack footer")
    return at, count


def parse_trailer(rows: bytes, name: str = "pack") -> list[PackEntry]:
    """The entries a v2 pack's trailer lists (``rows``: the trailer without its footer)."""
    if len(rows) % TRAILER_ROW.size:
        raise IntegrityError(f"{name}: damaged pack trailer")
    out = []
    for (
        raw_id,
        raw_base,
        off,
        raw_len,
        stored,
        codec,
        depth,
        kind,
        plain,
    ) in TRAILER_ROW.iter_unpack(rows):
        base = None if raw_base == _NO_BASE else raw_base.hex()
        out.append(PackEntry(raw_id.hex(), off, stored, raw_len, codec, base, depth, plain, kind))
    return out


def entries_end(view: bytes | memoryview, name: str = "pack") -> int:
    """Where a pack's entries end: its trailer (v2) or its end (v1). Checks the magic."""
    head = bytes(view[: len(MAGIC)])
    if head == MAGIC_V1:
        return len(view)
    if head != MAGIC:
        raise IntegrityError(f"{name}: not a tvc pack (bad magic)")
    at, _count = parse_footer(bytes(view[len(view) - FOOTER.size :]), len(view), name)
    return at


def read_pack_index(backend: Backend, name: str) -> list[PackEntry]:
    """Every entry of pack ``name`` with its kind, reading only the trailer of a v2 pack (two
    small ranged reads); a v1 pack is read whole and walked."""
    size = backend.size(name)
    head = backend.get(name, 0, min(size, len(MAGIC)))
    if head == MAGIC and size >= len(MAGIC) + FOOTER.size:
        at, count = parse_footer(backend.get(name, size - FOOTER.size, FOOTER.size), size, name)
        return parse_trailer(backend.get(name, at, count * TRAILER_ROW.size), name)
    return [entry for entry, _payload in iter_entries(backend.get(name), name)]


def iter_entries(blob: bytes, name: str = "pack") -> Iterator[tuple[PackEntry, memoryview]]:
    """Walk a whole pack's entries, validating every header against the pack's size.

    For a v2 pack the kinds and plain lengths come from its trailer, which must list exactly
    the entries found (a trailer that disagrees with the entries is damage).
    """
    view = memoryview(blob)
    end = entries_end(view, name)
    listed: dict[int, PackEntry] = {}
    if end != len(view):
        rows = bytes(view[end : len(view) - FOOTER.size])
        listed = {e.offset: e for e in parse_trailer(rows, name)}
    pos = len(MAGIC)
    seen = 0
    view = view[:end]
    while pos < len(view):
        if pos + ENTRY.size > len(view):
            raise IntegrityError(f"{name}: truncated entry header at byte {pos}")
        raw_id, raw_base, raw_len, stored_len, codec, depth = ENTRY.unpack_from(view, pos)
        pos += ENTRY.size
        if pos + stored_len > len(view):
            raise IntegrityError(f"{name}: entry at byte {pos} runs past the end of the pack")
        base = None if raw_base == _NO_BASE else raw_base.hex()
        entry = PackEntry(raw_id.hex(), pos, stored_len, raw_len, codec, base, depth)
        if listed:
            row = listed.get(pos)
            if row is None or (row.id, row.base, row.raw_len, row.stored_len, row.codec) != (
                entry.id,
                entry.base,
                entry.raw_len,
                entry.stored_len,
                entry.codec,
            ):
                raise IntegrityError(f"{name}: trailer does not match the entry at byte {pos}")
            entry = row
            seen += 1
        yield entry, view[pos : pos + stored_len]
        pos += stored_len
    if listed and seen != len(listed):
        raise IntegrityError(f"{name}: trailer lists {len(listed)} entries, found {seen}")
