"""What a format parser tells the store about a file: its layout.

A *layout* tiles a file, in order and without gaps or overlaps, into *segments*. A segment is
either a whole tensor's bytes (with its dtype, so the store can pick a float-aware codec and cut
pieces aligned to the tensor start) or opaque bytes (headers, padding, pickles) that the chunker
cuts by content. Parsers only describe; they never store. Every parser validates what it reads
from the file against the file's real size before it returns, so a hostile header is a
``FormatError`` here and never an allocation, a seek past the end, or a stack trace later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a parsed file: where its bytes are and how to read them back."""

    name: str
    dtype: str  # canonical name: F64 F32 F16 BF16 F8_E4M3 F8_E5M2 I64 I32 I16 I8 U8 BOOL, or a GGUF type
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
