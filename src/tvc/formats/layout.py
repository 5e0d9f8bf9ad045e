"""What a format parser tells the store about a file: its layout.

A *layout* tiles a file, in order and without gaps or overlaps, into *segments*. A segment is
either a whole tensor's bytes (with its dtype, so the store can pick a float-aware codec and cut
pieces aligned to the tensor start) or opaque bytes (headers, padding, pickles) that the chunker
cuts by content. Parsers only describe; they never store. Every parser validates what it reads
from the file against the file's real size before it returns, so a hostile header is a
``FormatError`` here and never an allocation, a seek past the end, or a stack trace later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a parsed file: where its bytes are and how to read them back."""

    name: str
    dtype: str  # canonical name (see tvc.formats.dtypes): F32 BF16 F8_E4M3 I64 …, or a GGUF type
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    length: int


@dataclass(frozen=True)
class Segment:
    """A contiguous byte range of the file."""

    offset: int
    length: int
    tensor: str | None = None  # the tensor whose bytes these are, or None for opaque bytes
    dtype: str | None = None
    itemsize: int = 0  # bytes per element; 0 when bytes are not fixed-size elements


@dataclass
class Layout:
    format: str  # "safetensors" | "gguf" | "torch" | "opaque"
    size: int
    segments: list[Segment]
    tensors: list[TensorInfo] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Assert the tiling invariant; parsers call this before returning."""
        from tvc.errors import FormatError

        pos = 0
        for seg in self.segments:
            if seg.offset != pos or seg.length < 0:
                raise FormatError(f"{self.format}: layout gap or overlap at byte {pos}")
            pos += seg.length
        if pos != self.size:
            raise FormatError(f"{self.format}: layout covers {pos} of {self.size} bytes")


def tile(size: int, parts: list[Segment], fail: Callable[[str], Exception]) -> list[Segment]:
    """Segments covering ``size`` bytes: the given tensor parts, with opaque segments between.

    ``parts`` may come in any order; empty parts are dropped (they hold no bytes) and a part
    that overlaps another or ends past ``size`` raises ``fail(problem)``. Parsers share this so
    every format tiles files the same way.
    """
    out: list[Segment] = []
    pos = 0
    prev: Segment | None = None
    for p in sorted((p for p in parts if p.length), key=lambda p: p.offset):
        if p.offset < pos:
            assert prev is not None
            raise fail(f"{brief(prev.tensor)} and {brief(p.tensor)} overlap")
        if p.offset + p.length > size:
            end = p.offset + p.length
            raise fail(f"{brief(p.tensor)} ends at byte {end}, past the end of the file ({size})")
        if p.offset > pos:
            out.append(Segment(pos, p.offset - pos))
        out.append(p)
        pos = p.offset + p.length
        prev = p
    if pos < size:
        out.append(Segment(pos, size - pos))
    return out


def brief(x: object) -> str:
    """A value for an error message: one line, never megabytes."""
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."
