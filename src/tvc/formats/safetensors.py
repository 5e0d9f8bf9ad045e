"""The safetensors parser, and the header encoder for the files tvc writes.

A safetensors file is an 8-byte little-endian *header length* N, an N-byte UTF-8 JSON *header*,
then the *data region*. The header maps tensor names to ``{"dtype", "shape", "data_offsets"}``,
where ``data_offsets = [begin, end]`` are relative to the data region; the optional
``__metadata__`` entry maps strings to strings. Everything the header claims is checked against
the real file size before a layout is returned.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
from collections.abc import Callable
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
    """Describe a safetensors file, or raise ``FormatError`` naming the file and the problem.

    A file is accepted only if the reference implementation (the ``safetensors`` Rust crate,
    0.8) would load it too, so a file tvc commits as tensors is one every consumer can read:
    its JSON rules are serde_json's, not Python's (no ``NaN``, no lone surrogates, nesting
    under 128 levels, numbers within range), and the tensors must cover the data region
    exactly, in offset order, without gaps, overlaps or trailing bytes. Where the reference
    is laxer (a name given twice: it keeps the last) tvc refuses.
    """
    with open(path, "rb") as f:
        return _parse(os.fspath(path), os.fstat(f.fileno()).st_size, f.read)


def parse_safetensors_bytes(data: bytes, name: str = "<bytes>") -> Layout:
    """``parse_safetensors`` of bytes in memory (the fuzz tests feed it thousands of files)."""
    return _parse(name, len(data), io.BytesIO(data).read)


def _parse(source: str, size: int, read: Callable[[int], bytes]) -> Layout:
    def fail(problem: str) -> FormatError:
        return FormatError(f"{source}: not a valid safetensors file: {problem}")

    if size < 8:
        raise fail(f"{size} bytes is too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", read(8))
    if n > MAX_HEADER:
        raise fail(f"header length {n} exceeds the {MAX_HEADER}-byte limit")
    if 8 + n > size:
        raise fail(f"header length {n} runs past the end of the {size}-byte file")
    raw = read(n)
    if len(raw) != n:
        raise fail("file shrank while being read")
    header = _decode_header(raw, fail)
    data_start = 8 + n
    data_len = size - data_start

    metadata: dict[str, Any] = {}
    tensors: list[TensorInfo] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if entry is None:  # serde reads null as "no metadata"
                continue
            if not isinstance(entry, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in entry.items()
            ):
                raise fail("__metadata__ must map strings to strings")
            metadata["__metadata__"] = dict(entry)
            continue
        tensors.append(_tensor(name, entry, data_start, fail))

    # The reference's rule: sorted by (begin, end), each tensor starts where the previous one
    # ended, the first at 0, and the last ends at the end of the file.
    tensors.sort(key=lambda t: (t.offset, t.offset + t.length, t.name))
    pos = data_start
    for t in tensors:
        if t.offset != pos:
            problem = "overlaps the tensor before it" if t.offset < pos else "leaves a gap"
            where = t.offset - data_start
            raise fail(f"tensor {brief(t.name)} at data byte {where} {problem}")
        pos = t.offset + t.length
    if pos != size:
        if pos > size:
            raise fail(
                f"tensors end at data byte {pos - data_start} but the data region holds "
                f"{data_len} (truncated file?)"
            )
        raise fail(f"{size - pos} bytes after the last tensor belong to none")

    parts = [
        Segment(t.offset, t.length, t.name, t.dtype, dtypes.itemsize(t.dtype)) for t in tensors
    ]
    segments = tile(size, parts, lambda problem: fail(f"tensors {problem}"))
    layout = Layout("safetensors", size, segments, tensors, metadata)
    layout.check()
    return layout


#: serde_json refuses JSON nested this deep (its recursion limit).
MAX_NESTING = 128
_U64_MAX = 2**64 - 1


def _decode_header(raw: bytes, fail) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise fail(f"header names {brief(k)} twice")
            out[k] = v
        return out

    def no_constant(name: str) -> Any:
        raise fail(f"header is not JSON ({name} is not a JSON number)")

    def integer(text: str) -> int | float:
        # serde_json reads "-0" as the float -0.0, which no shape or offset may be.
        return -0.0 if text == "-0" else int(text)

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"header is not UTF-8 ({e.reason} at byte {8 + e.start})") from None
    try:
        header = json.loads(
            text,
            object_pairs_hook=no_duplicates,
            parse_constant=no_constant,
            # the hook costs a Python call per number: only when a "-0" may be there at all
            parse_int=integer if b"-0" in raw else None,
        )
    except FormatError:
        raise
    except json.JSONDecodeError as e:
        raise fail(f"header is not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:
        # Integers with too many digits, or nesting deep enough to exhaust the stack.
        raise fail(f"header is not usable JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise fail(f"header is a JSON {type(header).__name__}, not an object")
    problem = _serde_problem(header)
    if problem is not None:
        raise fail(f"header is not JSON the reference reads ({problem})")
    return header


def _serde_problem(header: dict[str, Any]) -> str | None:
    """What serde_json would refuse in a header Python's json module accepted, or None.

    Python takes lone UTF-16 surrogates (``"\\ud800"``), numbers beyond the float range (as
    infinity or a huge int) and any nesting its stack allows; serde_json takes none of them.
    A tensor entry's own fields are checked by ``_tensor`` (a dtype from the list, integers);
    everything else — names, metadata, extra fields — is walked here.
    """
    stack: list[tuple[Any, int]] = []
    for name, entry in header.items():
        if _has_surrogate(name):
            return "a lone UTF-16 surrogate"
        if name == "__metadata__" or not isinstance(entry, dict):
            stack.append((entry, 2))
            continue
        for field, value in entry.items():
            if _has_surrogate(field):
                return "a lone UTF-16 surrogate"
            if field in _TENSOR_FIELDS and _plain(value):
                continue
            stack.append((value, 3))
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_NESTING:
                return f"nested {MAX_NESTING} levels deep"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                if isinstance(k, str) and _has_surrogate(k):
                    return "a lone UTF-16 surrogate"
                stack.append((v, depth + 1))
        elif isinstance(value, str):
            if _has_surrogate(value):
                return "a lone UTF-16 surrogate"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return "a number out of range"
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                float(value)
            except OverflowError:
                return "a number out of range"
    return None


_TENSOR_FIELDS = frozenset({"dtype", "shape", "data_offsets"})


def _plain(value: Any) -> bool:
    """A dtype name or a list of small integers: nothing serde_json could object to."""
    if isinstance(value, str):
        return value in dtypes.SAFETENSORS_DTYPES
    return isinstance(value, list) and all(type(x) is int and 0 <= x <= _U64_MAX for x in value)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(s: str) -> bool:
    return _SURROGATE.search(s) is not None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _tensor(name: str, entry: Any, data_start: int, fail) -> TensorInfo:
    if not isinstance(entry, dict):
        raise fail(f"entry {brief(name)} is not an object")
    for field in ("dtype", "shape", "data_offsets"):
        if field not in entry:
            raise fail(f"tensor {brief(name)} has no {field}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in dtypes.SAFETENSORS_DTYPES:
        raise fail(f"tensor {brief(name)} has unknown dtype {brief(dtype)}")
    if not isinstance(shape, list) or not all(_is_int(d) and 0 <= d <= _U64_MAX for d in shape):
        raise fail(f"tensor {brief(name)} has a shape that is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) and 0 <= o <= _U64_MAX for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise fail(f"tensor {brief(name)} needs data_offsets [begin, end] with 0 <= begin <= end")
    begin, end = offsets
    width = dtypes.bits(dtype)
    assert width is not None
    # As the reference counts: elements in order, then bits, each product within 64 bits (a
    # zero after an overflowing prefix does not save it). Never builds a huge integer.
    count = 1
    for d in shape:
        count *= d
        if count > _U64_MAX:
            raise fail(f"tensor {brief(name)}: shape {brief(shape)} overflows 64 bits")
    nbits = count * width
    if nbits > _U64_MAX:
        raise fail(f"tensor {brief(name)}: shape {brief(shape)} overflows 64 bits")
    span = end - begin
    if nbits % 8:
        raise fail(f"tensor {brief(name)}: {dtype} {brief(shape)} is not a whole number of bytes")
    if nbits != 8 * span:
        raise fail(
            f"tensor {brief(name)}: {dtype} {brief(shape)} is {nbits // 8} bytes "
            f"but data_offsets span {span}"
        )
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, span)
