"""The safetensors parser, and the header encoder for the files tvc writes.

A safetensors file is an 8-byte little-endian *header length* N, an N-byte UTF-8 JSON *header*,
then the *data region*. The header maps tensor names to ``{"dtype", "shape", "data_offsets"}``,
where ``data_offsets = [begin, end]`` are relative to the data region; the optional
``__metadata__`` entry maps strings to strings. Everything the header claims is checked against
the real file size before a layout is returned.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

from tvc.errors import FormatError
from tvc.formats import dtypes
from tvc.formats.layout import Layout, Segment, TensorInfo, brief, tile

#: The largest header we accept; the reference implementation has the same limit.
MAX_HEADER = 100_000_000


def encode_header(header: dict[str, Any]) -> bytes:
    """The header length and JSON header of a safetensors file, padded with spaces so the data
    region starts 8-byte aligned (as the safetensors library writes it)."""
    blob = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob


def parse_safetensors(path: str | os.PathLike[str]) -> Layout:
    """Describe a safetensors file, or raise ``FormatError`` naming the file and the problem."""

    def fail(problem: str) -> FormatError:
        return FormatError(f"{os.fspath(path)}: not a valid safetensors file: {problem}")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise fail(f"{size} bytes is too short for the 8-byte header length")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER:
            raise fail(f"header length {n} exceeds the {MAX_HEADER}-byte limit")
        if 8 + n > size:
            raise fail(f"header length {n} runs past the end of the {size}-byte file")
        raw = f.read(n)
    if len(raw) != n:
        raise fail("file shrank while being read")
    header = _decode_header(raw, fail)
    data_start = 8 + n
    data_len = size - data_start

    metadata: dict[str, Any] = {}
    tensors: list[TensorInfo] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in entry.items()
            ):
                raise fail("__metadata__ must map strings to strings")
            metadata["__metadata__"] = dict(entry)
            continue
        tensors.append(_tensor(name, entry, data_start, data_len, fail))

    tensors.sort(key=lambda t: (t.offset, t.length, t.name))
    parts = [
        Segment(t.offset, t.length, t.name, t.dtype, dtypes.itemsize(t.dtype)) for t in tensors
    ]
    segments = tile(size, parts, lambda problem: fail(f"tensors {problem}"))
    layout = Layout("safetensors", size, segments, tensors, metadata)
    layout.check()
    return layout


def _decode_header(raw: bytes, fail) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise fail(f"header names {brief(k)} twice")
            out[k] = v
        return out

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"header is not UTF-8 ({e.reason} at byte {8 + e.start})") from None
    try:
        header = json.loads(text, object_pairs_hook=no_duplicates)
    except FormatError:
        raise
    except json.JSONDecodeError as e:
        raise fail(f"header is not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:
        # Integers with too many digits, or nesting deep enough to exhaust the stack.
        raise fail(f"header is not usable JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise fail(f"header is a JSON {type(header).__name__}, not an object")
    return header


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _tensor(name: str, entry: Any, data_start: int, data_len: int, fail) -> TensorInfo:
    if not isinstance(entry, dict):
        raise fail(f"entry {brief(name)} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in dtypes.SAFETENSORS_DTYPES:
        raise fail(f"tensor {brief(name)} has unknown dtype {brief(dtype)}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise fail(f"tensor {brief(name)} has a shape that is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise fail(f"tensor {brief(name)} needs data_offsets [begin, end] with 0 <= begin <= end")
    begin, end = offsets
    if end > data_len:
        raise fail(
            f"tensor {brief(name)} ends at data byte {end} but the data region holds {data_len} "
            "(truncated file?)"
        )
    width = dtypes.bits(dtype)
    assert width is not None
    # Multiply with an early exit so an absurd shape cannot build a huge integer.
    span = end - begin
    nbits = 0 if 0 in shape else width
    for d in shape:
        nbits *= d
        if nbits > 8 * span:
            raise fail(f"tensor {brief(name)} of shape {brief(shape)} needs more than {span} bytes")
    if nbits != 8 * span:
        raise fail(
            f"tensor {brief(name)}: {dtype} {brief(shape)} is {nbits} bits "
            f"but data_offsets span {span} bytes"
        )
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, end - begin)
