"""Manifests: a file as an ordered list of chunks plus its tensor table.

A manifest is stored once per distinct file content (it is named by the BLAKE3 of its canonical
JSON), so committing the same file again — into any model — adds one row at most and no chunk
bytes. Pieces of a tensor line up with chunks: the formats layer cuts tensors at their start, so
the chunks of a tensor are a contiguous run and ``tensor(name)`` reads exactly those.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import Any

import zstandard

from tvc.errors import IntegrityError, UsageError
from tvc.store import hashing

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    length: int


@dataclass
class Manifest:
    size: int
    digest: str  # BLAKE3 of the whole file
    format: str
    chunks: list[tuple[str, int]]  # (chunk id, length), tiling the file in order
    tensors: list[TensorEntry] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    # SHA-256 of the whole file, recorded at commit: the Hugging Face clients take a 64-hex ETag
    # for it and verify files against it, and hashing a large file per request is too slow for
    # their 10 s HEAD timeout. None in manifests made before it was recorded.
    sha256: str | None = None
    _starts: list[int] | None = field(default=None, repr=False, compare=False)
    _canonical: bytes | None = field(default=None, repr=False, compare=False)

    # -- encoding --------------------------------------------------------------------------
    def canonical(self) -> bytes:
        """The canonical JSON, made once: a commit asks for it (and the id) five times per
        file, 5 s of a commit of 100,000 small files. A manifest is not changed once made."""
        if self._canonical is None:
            self._canonical = self._make_canonical()
        return self._canonical

    def _make_canonical(self) -> bytes:
        doc = {
            "v": MANIFEST_VERSION,
            "size": self.size,
            "digest": self.digest,
            "format": self.format,
            "chunks": [[cid, n] for cid, n in self.chunks],
            "tensors": [[t.name, t.dtype, list(t.shape), t.offset, t.length] for t in self.tensors],
            "metadata": self.metadata,
        }
        if self.sha256 is not None:  # absent, not null: older manifests keep their ids
            doc["sha256"] = self.sha256
        return canonical_json(doc)

    @property
    def id(self) -> str:
        return hashing.digest(self.canonical())

    def encode(self) -> bytes:
        return zstandard.ZstdCompressor(level=3).compress(self.canonical())

    @classmethod
    def decode(cls, body: bytes, expected_id: str | None = None) -> Manifest:
        try:
            raw = zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 30)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"manifest {expected_id}: cannot decompress ({exc})") from exc
        if expected_id is not None and hashing.digest(raw) != expected_id:
            raise IntegrityError(f"manifest {expected_id}: content does not match its hash")
        return cls.from_canonical(raw, expected_id)

    @classmethod
    def from_canonical(cls, raw: bytes, name: str | None = None) -> Manifest:
        """A manifest from its canonical JSON (as kept in the store); malformed → integrity."""
        try:
            doc = json.loads(raw)
            return cls(
                size=doc["size"],
                digest=doc["digest"],
                format=doc["format"],
                chunks=[(c, n) for c, n in doc["chunks"]],
                tensors=[TensorEntry(n, d, tuple(s), o, ln) for n, d, s, o, ln in doc["tensors"]],
                metadata=doc.get("metadata", {}),
                sha256=doc.get("sha256"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"manifest {name}: malformed ({exc})") from exc

    # -- lookups ---------------------------------------------------------------------------
    @property
    def starts(self) -> list[int]:
        if self._starts is None:
            pos, starts = 0, []
            for _cid, n in self.chunks:
                starts.append(pos)
                pos += n
            self._starts = starts
        return self._starts

    def chunk_range(self, offset: int, length: int) -> tuple[int, int]:
        """Indices [first, last) of the chunks covering bytes [offset, offset+length)."""
        if length <= 0:
            return 0, 0
        first = bisect.bisect_right(self.starts, offset) - 1
        last = bisect.bisect_left(self.starts, offset + length)
        return max(first, 0), last

    def tensor(self, name: str) -> TensorEntry | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None

    def tensor_chunks(self) -> dict[str, list[str]]:
        """Tensor name → ids of the chunks holding it, in order."""
        out = {}
        for t in self.tensors:
            a, b = self.chunk_range(t.offset, t.length)
            out[t.name] = [cid for cid, _n in self.chunks[a:b]]
        return out

    def piece_map(self) -> dict[tuple[str, str, tuple[int, ...], int], str]:
        """(tensor, dtype, shape, piece) → chunk id, for chunks that are exactly tensor pieces.

        This is how a new version finds, for each piece of a changed tensor, the same piece of the
        same tensor in its parent: the delta base.
        """
        out = {}
        for t in self.tensors:
            a, b = self.chunk_range(t.offset, t.length)
            if a < len(self.starts) and self.starts[a] == t.offset:
                for k, (cid, _n) in enumerate(self.chunks[a:b]):
                    out[(t.name, t.dtype, t.shape, k)] = cid
        return out


def canonical_json(doc: Any) -> bytes:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # a name or message that is not valid text
        bad = exc.object[exc.start : exc.end]
        raise UsageError(f"text that is not valid UTF-8 ({bad!r}): use UTF-8") from None
