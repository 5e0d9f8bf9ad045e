"""The GGUF parser.

A GGUF file is a *header* (magic ``GGUF``, version, tensor count, KV count), the *KV fields*
(typed metadata: numbers, strings, arrays), the *tensor infos* (name, dims, GGML type, offset),
padding up to the *alignment*, then the *data region* where each tensor's bytes start at its
offset. Tensor shapes are reported in numpy (row-major) order, i.e. GGUF's ``ne`` reversed,
the same order ``gguf.GGUFReader`` uses for ``.data``; dtypes are GGML type names.

We walk the header ourselves, with every count and length checked against the bytes that are
really left, instead of calling ``gguf.GGUFReader``: the reader spends seconds in per-element
numpy calls on a real tokenizer vocabulary, and trusts array lengths (a hostile count makes it
loop for ever). The ``gguf`` package still supplies the type tables, and the tests check this
parser against ``GGUFReader`` on files ``GGUFWriter`` writes.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Callable
from typing import Any

from gguf.constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGMLQuantizationType,
    GGUFValueType,
)

from tvc.errors import FormatError
from tvc.formats import dtypes
from tvc.formats.layout import Layout, Segment, TensorInfo, brief, tile

MAGIC = b"GGUF"
#: GGML tensors have at most four dimensions; llama.cpp rejects more.
MAX_DIMS = 4
#: Arrays longer than this are summarized in Layout.metadata as {"type", "length"}.
ARRAY_SUMMARY = 16
#: Strings longer than this (bytes) are summarized the same way.
STRING_SUMMARY = 65536
#: Arrays nest at most this deep; deeper is hostile, not a model.
MAX_NESTING = 8

#: GGUFReader files the header's own fields under these names, so a KV key may not take them.
_RESERVED_KEYS = frozenset({"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"})
#: Types GGUFReader reads as numpy elements; it reads any other type as bytes per row, which
#: needs a row (a 0-dimensional tensor of such a type cannot be read).
_ELEMENT_TYPES = frozenset(
    GGMLQuantizationType[n] for n in ("F16", "F32", "F64", "I8", "I16", "I32", "I64")
)

_SCALARS: dict[int, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}


def parse_gguf(path: str | os.PathLike[str]) -> Layout:
    """Describe a GGUF file, or raise ``FormatError`` naming the file and the problem."""

    def fail(problem: str) -> FormatError:
        return FormatError(f"{os.fspath(path)}: not a valid GGUF file: {problem}")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 24:
            raise fail(f"{size} bytes is too short for a GGUF header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse(_Cursor(mm, size, fail), fail)


def parse_gguf_bytes(data: bytes, name: str = "<bytes>") -> Layout:
    """``parse_gguf`` of bytes in memory (the fuzz tests feed it thousands of files)."""

    def fail(problem: str) -> FormatError:
        return FormatError(f"{name}: not a valid GGUF file: {problem}")

    if len(data) < 24:
        raise fail(f"{len(data)} bytes is too short for a GGUF header")
    return _parse(_Cursor(data, len(data), fail), fail)


class _Cursor:
    """Reads GGUF primitives, refusing to step past the end of the file."""

    def __init__(self, buf: mmap.mmap | bytes, size: int, fail: Callable[[str], FormatError]):
        self.buf, self.size, self.fail = buf, size, fail
        self.pos = 0
        self.order = "<"

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(f"{what} at byte {self.pos} runs past the end of the file")

    def unpack(self, code: str, what: str) -> Any:
        n = struct.calcsize(code)
        self.need(n, what)
        (v,) = struct.unpack_from(self.order + code, self.buf, self.pos)
        self.pos += n
        return v

    def raw_string(self, what: str) -> bytes:
        n = self.unpack("Q", what)
        self.need(n, what)
        s = self.buf[self.pos : self.pos + n]
        self.pos += n
        return s

    def skip_string(self, what: str) -> None:
        n = self.unpack("Q", what)
        self.need(n, what)
        self.pos += n

    def name(self, what: str) -> str:
        at = self.pos
        try:
            return self.raw_string(what).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} at byte {at} is not UTF-8") from None


def _parse(c: _Cursor, fail: Callable[[str], FormatError]) -> Layout:
    if c.buf[:4] != MAGIC:
        raise fail(f"magic is {bytes(c.buf[:4])!r}, not {MAGIC!r}")
    c.pos = 4
    version = c.unpack("I", "version")
    if version & 0xFFFF == 0:  # written on a big-endian machine
        c.order = ">"
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in (2, 3):
        raise fail(f"version {version} is not supported (only 2 and 3)")
    n_tensors = c.unpack("Q", "tensor count")
    n_kv = c.unpack("Q", "KV count")
    # Every KV field takes at least 13 bytes and every tensor info at least 24.
    if n_kv * 13 + n_tensors * 24 > c.size - c.pos:
        raise fail(f"{n_kv} KV fields and {n_tensors} tensors cannot fit in {c.size} bytes")

    metadata: dict[str, Any] = {"GGUF.version": version}
    if c.order == ">":
        metadata["GGUF.byteorder"] = "big"
    alignment = GGUF_DEFAULT_ALIGNMENT
    keys: set[str] = set(_RESERVED_KEYS)
    for _ in range(n_kv):
        key = c.name("KV key")
        if key in keys:
            what = "is reserved" if key in _RESERVED_KEYS else "appears twice"
            raise fail(f"KV key {brief(key)} {what}")
        keys.add(key)
        vtype = c.unpack("I", f"type of {brief(key)}")
        if key == "general.alignment":
            if vtype != GGUFValueType.UINT32:
                raise fail("general.alignment must be a UINT32")
            alignment = c.unpack("I", "general.alignment")
            if alignment == 0 or alignment & (alignment - 1):
                raise fail(f"alignment {alignment} is not a power of two")
            metadata[key] = alignment
        else:
            metadata[key] = _value(c, vtype, key, 0)

    infos: list[tuple[str, tuple[int, ...], str, int, int]] = []
    names: set[str] = set()
    for _ in range(n_tensors):
        name = c.name("tensor name")
        if name in names:
            raise fail(f"tensor {brief(name)} appears twice")
        names.add(name)
        n_dims = c.unpack("I", f"dims of {brief(name)}")
        if n_dims > MAX_DIMS:
            raise fail(f"tensor {brief(name)} has {n_dims} dimensions (at most {MAX_DIMS})")
        ne = [c.unpack("Q", f"dims of {brief(name)}") for _ in range(n_dims)]
        raw_type = c.unpack("I", f"type of {brief(name)}")
        try:
            qtype = GGMLQuantizationType(raw_type)
            block, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise fail(f"tensor {brief(name)} has unknown GGML type {raw_type}") from None
        offset = c.unpack("Q", f"offset of {brief(name)}")
        if not ne and qtype not in _ELEMENT_TYPES:
            raise fail(f"tensor {brief(name)}: a {qtype.name} tensor needs a dimension")
        if ne and ne[0] % block:
            raise fail(f"tensor {brief(name)}: {qtype.name} needs rows of {block} elements")
        count = math.prod(ne)
        if count % block:
            raise fail(f"tensor {brief(name)}: {count} elements is not whole {qtype.name} blocks")
        if offset % alignment:
            raise fail(f"tensor {brief(name)} offset {offset} is not a multiple of {alignment}")
        length = count // block * type_size
        infos.append((name, tuple(reversed(ne)), qtype.name, offset, length))

    data_start = -(-c.pos // alignment) * alignment
    tensors: list[TensorInfo] = []
    for name, shape, dtype, offset, length in infos:
        start = data_start + offset
        if start + length > c.size:
            raise fail(
                f"tensor {brief(name)} ends at byte {start + length}, "
                f"past the end of the file ({c.size}; truncated?)"
            )
        tensors.append(TensorInfo(name, dtype, shape, start, length))
    tensors.sort(key=lambda t: (t.offset, t.length, t.name))
    parts = [
        Segment(t.offset, t.length, t.name, t.dtype, dtypes.itemsize(t.dtype)) for t in tensors
    ]
    segments = tile(c.size, parts, lambda p: fail(f"tensors {p}"))
    layout = Layout("gguf", c.size, segments, tensors, metadata)
    layout.check()
    return layout


def _value(c: _Cursor, vtype: int, key: str, depth: int) -> Any:
    """Read one KV value, returning a JSON-able stand-in (long arrays and strings summarized)."""
    code = _SCALARS.get(vtype)
    if code is not None:
        return _jsonable(c.unpack(code, f"value of {brief(key)}"))
    if vtype == GGUFValueType.STRING:
        s = c.raw_string(f"value of {brief(key)}")
        if len(s) > STRING_SUMMARY:
            return {"type": "STRING", "length": len(s)}
        return s.decode("utf-8", "replace")
    if vtype != GGUFValueType.ARRAY:
        raise c.fail(f"{brief(key)} has unknown value type {vtype}")
    if depth >= MAX_NESTING:
        raise c.fail(f"{brief(key)} nests arrays more than {MAX_NESTING} deep")
    itype = c.unpack("I", f"array type of {brief(key)}")
    n = c.unpack("Q", f"array length of {brief(key)}")
    try:
        type_name = GGUFValueType(itype).name
    except ValueError:
        raise c.fail(f"{brief(key)} is an array of unknown type {itype}") from None
    code = _SCALARS.get(itype)
    if code is not None:
        width = struct.calcsize(code)
        c.need(n * width, f"array {brief(key)}")
        if n > ARRAY_SUMMARY:
            c.pos += n * width
            return {"type": type_name, "length": n}
        return [_value(c, itype, key, depth + 1) for _ in range(n)]
    # Strings take at least 8 bytes each and arrays at least 12: check before looping.
    c.need(n * (8 if itype == GGUFValueType.STRING else 12), f"array {brief(key)}")
    if n > ARRAY_SUMMARY and itype == GGUFValueType.STRING:
        for _ in range(n):  # skip without decoding: vocabularies hold 100k+ strings
            c.skip_string(f"array {brief(key)}")
        return {"type": type_name, "length": n}
    items = [_value(c, itype, key, depth + 1) for _ in range(n)]
    return items if n <= ARRAY_SUMMARY else {"type": type_name, "length": n}


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)  # JSON has no NaN or infinity
    return v
