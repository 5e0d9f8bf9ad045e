"""Cutting a file into chunks along its layout.

A *chunk spec* names a byte range of the file that the store will hash and keep as one chunk.
Tensor segments are cut into fixed *pieces* of ``piece_size`` counted from the tensor's first
byte, so piece k of tensor T holds the same elements in every version even when other tensors
grew, shrank or moved; that is what lets the store delta piece k against its parent. Opaque
segments are cut by content (FastCDC), so an insertion only disturbs the chunks around it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pyfastcdc import FastCDC

from tvc.errors import FormatError
from tvc.formats.layout import Layout

PIECE_SIZE = 4 * 1024 * 1024
CDC_MIN = 32 * 1024
CDC_AVG = 128 * 1024
CDC_MAX = 512 * 1024


@dataclass(frozen=True)
class ChunkSpec:
    """One chunk to store: a byte range of the file and what it holds."""

    offset: int
    length: int
    tensor: str | None  # the tensor these bytes belong to, None for opaque bytes
    piece: int  # index of this piece within its tensor (0 for opaque bytes)
    dtype: str | None
    itemsize: int


def iter_chunks(
    buf: bytes | bytearray | memoryview, layout: Layout, *, piece_size: int = PIECE_SIZE
) -> Iterator[ChunkSpec]:
    """Yield chunk specs that tile ``buf`` (the whole file) exactly, in file order.

    ``buf`` must be the file the layout describes; a different length means the file changed
    after it was parsed, which is reported rather than silently stored under the old layout.
    """
    if piece_size <= 0:
        raise ValueError(f"piece_size must be positive, not {piece_size}")
    # Release our views when the caller stops iterating, so it can close its mmap at once.
    with memoryview(buf) as whole, whole.cast("B") as view:
        yield from _cut(view, layout, piece_size)


def _cut(view: memoryview, layout: Layout, piece_size: int) -> Iterator[ChunkSpec]:
    if view.nbytes != layout.size:
        raise FormatError(
            f"file is {view.nbytes} bytes but was parsed at {layout.size} "
            "(did it change while being committed?)"
        )
    cdc: FastCDC | None = None
    for seg in layout.segments:
        if seg.length == 0:
            continue
        if seg.tensor is not None:
            for piece, start in enumerate(range(0, seg.length, piece_size)):
                length = min(piece_size, seg.length - start)
                yield ChunkSpec(
                    seg.offset + start, length, seg.tensor, piece, seg.dtype, seg.itemsize
                )
            continue
        if seg.length < CDC_MIN:
            yield ChunkSpec(seg.offset, seg.length, None, 0, None, 0)
            continue
        if cdc is None:
            cdc = FastCDC(CDC_AVG, min_size=CDC_MIN, max_size=CDC_MAX)
        # Collect the cuts before yielding so no view into the caller's buffer (an mmap it may
        # close) outlives this loop iteration.
        with view[seg.offset : seg.offset + seg.length] as part:
            cuts = [(c.offset, c.length) for c in cdc.cut_buf(part)]
        for off, length in cuts:
            yield ChunkSpec(seg.offset + off, length, None, 0, None, 0)
