"""Tensors as the analysis layer sees them: fingerprints, streamed reads, dtype conversion.

Everything here reads a tensor block by block (``BLOCK_ELEMENTS`` elements at a time, from the
chunks that hold it), so diffing or merging a 10 GB tensor needs a few blocks of memory, not
the tensor. Blocks of several tensors of the same shape line up element for element, whatever
their dtypes and however the store cut them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tvc.formats import dtypes
from tvc.repo.manifest import Manifest, TensorEntry

if TYPE_CHECKING:
    from tvc.repo.repository import Repository
    from tvc.repo.version import Version
    from tvc.store.chunkstore import ChunkInfo

#: Elements per streamed block: 4 MiB of F32, which is also the store's piece size.
BLOCK_ELEMENTS = 1 << 20

FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
INT_DTYPES = frozenset({"I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8"})
#: dtypes whose values the analysis layer can compare numerically (as float64).
NUMERIC_DTYPES = FLOAT_DTYPES | INT_DTYPES | {"BOOL"}
#: dtypes a weight merge can compute with (and cast back to without losing meaning).
MERGEABLE_DTYPES = FLOAT_DTYPES | INT_DTYPES


@dataclass(frozen=True)
class TensorRef:
    """One tensor of one file of one version, and the chunks that hold it."""

    version: Version
    path: str
    manifest: Manifest
    entry: TensorEntry

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def dtype(self) -> str:
        return self.entry.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.entry.shape)

    @property
    def chunk_ids(self) -> tuple[str, ...]:
        a, b = self.manifest.chunk_range(self.entry.offset, self.entry.length)
        return tuple(cid for cid, _n in self.manifest.chunks[a:b])

    @property
    def fingerprint(self) -> tuple[str, tuple[int, ...], tuple[str, ...]]:
        """Equal fingerprints mean equal bytes (tensors are chunked from their first byte)."""
        return (self.dtype, self.shape, self.chunk_ids)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


def file_tensors(repo: Repository, version: Version, path: str) -> dict[str, TensorRef]:
    """The tensors of one file of a version, by name, in file order."""
    fe = next((f for f in version.files if f.path == path), None)
    if fe is None:
        return {}
    manifest = repo.manifest(fe.manifest_id)
    return {t.name: TensorRef(version, path, manifest, t) for t in manifest.tensors}


def iter_raw(
    repo: Repository, ref: TensorRef, known: dict[str, ChunkInfo] | None = None
) -> Iterator[memoryview]:
    """The tensor's bytes, verified, as the pieces its chunks hold (``known``: prefetched
    index rows, see :meth:`ChunkStore.read_many`)."""
    manifest, entry = ref.manifest, ref.entry
    a, b = manifest.chunk_range(entry.offset, entry.length)
    if b <= a:
        return
    ids = [cid for cid, _n in manifest.chunks[a:b]]
    pos = manifest.starts[a]
    end = entry.offset + entry.length
    for data in repo.store.read_many(ids, known):
        lo, hi = max(entry.offset - pos, 0), min(end - pos, len(data))
        if hi > lo:
            yield memoryview(data)[lo:hi]
        pos += len(data)


def reblock(pieces: Iterable[bytes | memoryview], size: int) -> Iterator[bytes]:
    """Re-cut a byte stream into blocks of exactly ``size`` bytes (the last may be shorter)."""
    buf = bytearray()
    for piece in pieces:
        if not buf and len(piece) == size:
            yield bytes(piece)
            continue
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def itemsize(dtype: str) -> int:
    return dtypes.itemsize(dtype)


def iter_blocks(
    repo: Repository,
    ref: TensorRef,
    elements: int | None = None,
    known: dict[str, ChunkInfo] | None = None,
) -> Iterator[np.ndarray]:
    """The tensor's values as float64 blocks of ``elements`` elements (flattened, C order)."""
    n = elements or BLOCK_ELEMENTS
    for raw in reblock(iter_raw(repo, ref, known), n * itemsize(ref.dtype)):
        yield decode(raw, ref.dtype)


def iter_aligned(
    repo: Repository,
    refs: list[TensorRef],
    elements: int | None = None,
    known: dict[str, ChunkInfo] | None = None,
) -> Iterator[tuple[np.ndarray, ...]]:
    """Blocks of several same-shaped tensors, element-aligned: one float64 array per tensor."""
    streams = [iter_blocks(repo, r, elements, known) for r in refs]
    yield from zip(*streams, strict=True)


def decode(raw: bytes | memoryview, dtype: str) -> np.ndarray:
    """Little-endian element bytes → float64 (BF16 widened exactly, through float32)."""
    if dtype == "BF16":
        wide = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return wide.view("<f4").astype(np.float64)
    npdt = dtypes.numpy_dtype(dtype)
    if npdt is None:
        raise ValueError(f"dtype {dtype} has no numeric decoding")
    return np.frombuffer(raw, dtype=npdt).astype(np.float64)


def encode(values: np.ndarray, dtype: str) -> bytes:
    """float64 values → the little-endian bytes of ``dtype``, rounding to nearest even.

    Integers are rounded to the nearest integer and clipped to the dtype's range (a merged
    counter stays a valid counter); BF16 goes through :func:`to_bfloat16`.
    """
    if dtype == "BF16":
        return to_bfloat16(values).astype("<u2").tobytes()
    npdt = dtypes.numpy_dtype(dtype)
    if npdt is None or dtype not in MERGEABLE_DTYPES:
        raise ValueError(f"cannot write computed values as {dtype}")
    if dtype in INT_DTYPES:
        info = np.iinfo(npdt)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(npdt).tobytes()


def to_bfloat16(values: np.ndarray) -> np.ndarray:
    """The BF16 bit patterns (uint16) nearest to ``values``, ties to even; NaN stays NaN.

    float64 input is rounded to bfloat16 in one step: going through float32 with ordinary
    rounding could round twice (a float64 just above a BF16 halfway point would land on it in
    float32 and then round to even, the wrong way). Where float32 rounding was inexact and
    landed exactly on a BF16 halfway point, the direction is decided from the float64 value.
    """
    x = np.asarray(values)
    f32 = x.astype(np.float32)
    bits = f32.view(np.uint32)
    lsb = (bits >> 16) & 1
    rounded = ((bits.astype(np.uint64) + 0x7FFF + lsb) >> 16).astype(np.uint32)
    if x.dtype != np.float32:
        tie = (bits & 0xFFFF) == 0x8000
        inexact = f32.astype(np.float64) != x
        fix = tie & inexact & np.isfinite(x)
        if fix.any():
            up = np.abs(x) > np.abs(f32.astype(np.float64))
            truncated = bits >> 16
            rounded = np.where(fix, np.where(up, truncated + 1, truncated), rounded)
    nan = np.isnan(f32)
    rounded = np.where(nan, (bits >> 16) | 0x0040, rounded)
    return rounded.astype(np.uint16)
