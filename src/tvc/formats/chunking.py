"""Cutting a file into chunks along its layout.

A *chunk spec* names a byte range of the file that the store will hash and keep as one chunk.
Tensor segments are cut into fixed *pieces* of ``piece_size`` counted from the tensor's first
byte, so piece k of tensor T holds the same elements in every version even when other tensors
grew, shrank or moved; that is what lets the store delta piece k against its parent. Opaque
segments are cut by content (FastCDC), so an insertion only disturbs the chunks around it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


# Opaque segments are read for content-defined chunking in windows of this size, not mapped:
# a file truncated while it is committed then gives a short read (an error naming it) instead
# of a SIGBUS that kills the process. FastCDC's cut points depend only on the bytes since the
# previous cut, so restarting each window at the last certain cut gives the same cuts as one
# pass over the whole segment.
CDC_WINDOW = 64 * 1024 * 1024

Reader = Callable[[int, int], bytes]


def iter_chunks(
    src: bytes | bytearray | memoryview | Reader,
    layout: Layout,
    *,
    piece_size: int = PIECE_SIZE,
    size: int | None = None,
) -> Iterator[ChunkSpec]:
    """Yield chunk specs that tile the file exactly, in file order.

    ``src`` is the whole file's bytes, or ``read(offset, length)`` with the file's ``size``.
    A size other than the layout's means the file changed after it was parsed, which is
    reported rather than silently stored under the old layout.
    """
    if piece_size <= 0:
        raise ValueError(f"piece_size must be positive, not {piece_size}")
    if callable(src):
        if size is None:
            raise ValueError("a reader needs the file's size")
        yield from _cut(src, size, layout, piece_size)
        return
    data = bytes(src) if not isinstance(src, bytes) else src

    def read(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    yield from _cut(read, len(data), layout, piece_size)


def _cut(read: Reader, size: int, layout: Layout, piece_size: int) -> Iterator[ChunkSpec]:
    if size != layout.size:
        raise FormatError(
            f"file is {size} bytes but was parsed at {layout.size} "
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
        pos = 0
        while pos < seg.length:
            want = min(CDC_WINDOW, seg.length - pos)
            window = read(seg.offset + pos, want)
            if len(window) != want:
                raise FormatError("file changed while being committed (it got shorter)")
            cuts = [(c.offset, c.length) for c in cdc.cut_buf(window)]
            last = pos + want >= seg.length
            if not last and len(cuts) > 1:
                cuts.pop()  # ended by the window, not by the content: cut again from there
            for off, length in cuts:
                yield ChunkSpec(seg.offset + pos + off, length, None, 0, None, 0)
            pos += sum(length for _off, length in cuts)
