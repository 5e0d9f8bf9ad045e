"""Pack files: append-only containers of encoded chunks.

Layout: ``MAGIC`` then entries, each a fixed header (chunk id, base id, raw length, stored
length, codec, delta depth) followed by the encoded payload. The metadata DB indexes every entry,
but the headers make a pack self-describing: ``fsck --read-data`` walks them and an index could
be rebuilt from packs alone. A pack is named by the BLAKE3 of its bytes, so a pack whose content
changed no longer matches its name.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tvc.errors import IntegrityError
from tvc.store import durable, hashing

MAGIC = b"TVCPACK1"
ENTRY = struct.Struct("<32s32sQQBB")  # id, base (zeros if none), raw_len, stored_len, codec, depth
_NO_BASE = bytes(32)


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


class PackWriter:
    """Streams entries into a temp file, hashing as it goes; ``finish`` returns its final name."""

    def __init__(self, staging: Path) -> None:
        staging.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="pack-", suffix=durable.TMP_SUFFIX, dir=staging)
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
        entry = PackEntry(cid, self.size, len(payload), raw_len, codec, base, depth, plain_len)
        self._write(payload)
        self.entries.append(entry)
        return entry

    def finish(self) -> str:
        """fsync and close; returns the pack digest. The caller moves the file into a backend."""
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


def iter_entries(blob: bytes, name: str = "pack") -> Iterator[tuple[PackEntry, memoryview]]:
    """Walk a whole pack's entries, validating every header against the pack's size."""
    view = memoryview(blob)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise IntegrityError(f"{name}: not a tvc pack (bad magic)")
    pos = len(MAGIC)
    while pos < len(view):
        if pos + ENTRY.size > len(view):
            raise IntegrityError(f"{name}: truncated entry header at byte {pos}")
        raw_id, raw_base, raw_len, stored_len, codec, depth = ENTRY.unpack_from(view, pos)
        pos += ENTRY.size
        if pos + stored_len > len(view):
            raise IntegrityError(f"{name}: entry at byte {pos} runs past the end of the pack")
        base = None if raw_base == _NO_BASE else raw_base.hex()
        entry = PackEntry(raw_id.hex(), pos, stored_len, raw_len, codec, base, depth)
        yield entry, view[pos : pos + stored_len]
        pos += stored_len
