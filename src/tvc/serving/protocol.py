"""The Open Inference Protocol v2 (KServe's "V2") tensor codec: request bodies to numpy arrays
and arrays back to response bodies, JSON and the binary tensor extension.

Vocabulary
- *tensor spec*: name, OIP datatype (``FP32``, ``INT64``, ``BYTES`` …) and shape, ``-1`` for a
  dimension of any size; a model states one per input and output.
- *binary extension*: a body whose first ``Inference-Header-Content-Length`` bytes are the JSON
  header, followed by each tensor whose ``parameters.binary_data_size`` says it is there, raw,
  row-major, little-endian (a BYTES element is a 4-byte length, then its bytes). kserve's Python
  client sends inputs this way by default.

Everything here is pure (no HTTP, no model), so the parser of untrusted bodies is tested on its
own (tests/serving/test_protocol.py). Every malformed body raises
:class:`~tvc.errors.InferenceInputError` with one line saying what is wrong.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tvc.errors import InferenceInputError

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
MAX_ELEMENTS = 1 << 28  # a shape promising more than this is refused before any allocation
MAX_RANK = 16


def datatype_of(dtype: np.dtype) -> str:
    """The OIP datatype of a numpy dtype (strings and objects are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OUS":
        return "BYTES"
    for name, dt in DTYPES.items():
        if name != "BYTES" and dt == dtype.newbyteorder("<"):
            return name
    raise InferenceInputError(f"numpy dtype {dtype} has no OIP datatype")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output a model declares in its metadata; ``-1`` is any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def accepts(self, datatype: str, shape: tuple[int, ...]) -> str | None:
        """Why a tensor of ``datatype``/``shape`` does not fit this spec (None: it fits)."""
        if datatype != self.datatype:
            return f"input {self.name!r} takes {self.datatype}, not {datatype}"
        if len(shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        ):
            return f"input {self.name!r} takes shape {list(self.shape)}, not {list(shape)}"
        return None


@dataclass
class Request:
    """A decoded inference request: arrays by input name, and what the client asked back."""

    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] | None = None  # None: every output
    binary_outputs: set[str] = field(default_factory=set)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_RANK:
        raise InferenceInputError(f"{where}: shape must be a list of at most {MAX_RANK} sizes")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise InferenceInputError(f"{where}: shape must hold sizes >= 0, not {value!r}")
    shape = tuple(value)
    if math.prod(shape) > MAX_ELEMENTS:
        raise InferenceInputError(f"{where}: shape {list(shape)} is too large")
    return shape


def _flatten(data: Any, where: str) -> list[Any]:
    """Row-major flattening of nested lists (OIP allows both flat and nested data)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(x, list) for x in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for x in stack[-1]:
            if isinstance(x, list):
                if len(stack) > MAX_RANK:
                    raise InferenceInputError(f"{where}: data nested too deep")
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out


def _json_array(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    flat = _flatten(data, where)
    n = math.prod(shape)
    if len(flat) != n:
        raise InferenceInputError(f"{where}: shape {list(shape)} needs {n} values, got {len(flat)}")
    if datatype == "BYTES":
        if not all(isinstance(x, str | bytes) for x in flat):
            raise InferenceInputError(f"{where}: BYTES data must be strings")
        arr = np.empty(n, dtype=object)
        arr[:] = [x.encode() if isinstance(x, str) else x for x in flat]
        return arr.reshape(shape)
    if datatype == "BOOL":
        if not all(isinstance(x, bool) for x in flat):
            raise InferenceInputError(f"{where}: BOOL data must be true or false")
    elif not all(isinstance(x, int | float) and not isinstance(x, bool) for x in flat):
        raise InferenceInputError(f"{where}: {datatype} data must be numbers")
    dtype = DTYPES[datatype]
    if dtype.kind in "iu":
        if not all(isinstance(x, int) for x in flat):
            raise InferenceInputError(f"{where}: {datatype} data must be integers")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise InferenceInputError(f"{where}: a value is out of {datatype}'s range")
    try:
        return np.asarray(flat, dtype=dtype).reshape(shape)
    except (ValueError, OverflowError, TypeError) as exc:
        raise InferenceInputError(f"{where}: {exc}") from None


def _binary_array(raw: memoryview, datatype: str, shape: tuple[int, ...], where: str):
    n = math.prod(shape)
    if datatype == "BYTES":
        items, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise InferenceInputError(f"{where}: truncated BYTES element length")
            (size,) = struct.unpack_from("<I", raw, pos)
            if pos + 4 + size > len(raw):
                raise InferenceInputError(f"{where}: truncated BYTES element")
            items.append(bytes(raw[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if len(items) != n:
            raise InferenceInputError(f"{where}: shape {list(shape)} needs {n} values")
        arr = np.empty(n, dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    dtype = DTYPES[datatype]
    if len(raw) != n * dtype.itemsize:
        raise InferenceInputError(
            f"{where}: shape {list(shape)} of {datatype} needs {n * dtype.itemsize} bytes, "
            f"got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def decode(body: bytes, header_length: int | None = None) -> Request:
    """Parse an inference request body (``header_length``: the binary extension's
    ``Inference-Header-Content-Length``; None for plain JSON)."""
    view = memoryview(body)
    if header_length is not None:
        if not 0 <= header_length <= len(body):
            raise InferenceInputError("Inference-Header-Content-Length exceeds the body")
        head, rest = view[:header_length], view[header_length:]
    else:
        head, rest = view, view[:0]
    try:
        doc = json.loads(bytes(head))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InferenceInputError(f"request body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InferenceInputError("request body must be a JSON object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InferenceInputError("request needs a non-empty 'inputs' list")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InferenceInputError("'parameters' must be an object")
    out = Request({}, {}, id=None, parameters=params)
    rid = doc.get("id")
    if rid is not None:
        if not isinstance(rid, str):
            raise InferenceInputError("'id' must be a string")
        out.id = rid
    pos = 0
    for i, item in enumerate(inputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InferenceInputError(f"input {i} needs a 'name'")
        name = item["name"]
        where = f"input {name!r}"
        if name in out.inputs:
            raise InferenceInputError(f"{where} is given twice")
        datatype = item.get("datatype")
        if datatype not in DTYPES:
            raise InferenceInputError(f"{where}: unknown datatype {datatype!r}")
        shape = _shape(item.get("shape"), where)
        iparams = item.get("parameters") or {}
        if not isinstance(iparams, dict):
            raise InferenceInputError(f"{where}: 'parameters' must be an object")
        size = iparams.get("binary_data_size")
        if size is not None:
            if header_length is None:
                raise InferenceInputError(
                    f"{where}: binary_data_size without Inference-Header-Content-Length"
                )
            if not isinstance(size, int) or size < 0 or pos + size > len(rest):
                raise InferenceInputError(f"{where}: binary_data_size exceeds the body")
            if "data" in item:
                raise InferenceInputError(f"{where}: both 'data' and binary data")
            arr = _binary_array(rest[pos : pos + size], datatype, shape, where)
            pos += size
        else:
            if "data" not in item:
                raise InferenceInputError(f"{where} has no 'data'")
            arr = _json_array(item["data"], datatype, shape, where)
        out.inputs[name] = arr
        out.datatypes[name] = datatype
    if pos != len(rest):
        raise InferenceInputError(f"{len(rest) - pos} bytes after the last binary input")
    wanted = doc.get("outputs")
    all_binary = bool(params.get("binary_data_output", False))
    if wanted is not None:
        if not isinstance(wanted, list):
            raise InferenceInputError("'outputs' must be a list")
        out.outputs = []
        for o in wanted:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InferenceInputError("each requested output needs a 'name'")
            out.outputs.append(o["name"])
            oparams = o.get("parameters") or {}
            if isinstance(oparams, dict) and oparams.get("binary_data", all_binary):
                out.binary_outputs.add(o["name"])
    elif all_binary:
        out.binary_outputs = {"*"}
    return out


def _bytes_item(x: Any) -> bytes:
    if isinstance(x, bytes):
        return x
    return str(x).encode()


def encode(
    model_name: str,
    model_version: str,
    outputs: dict[str, np.ndarray],
    *,
    request_id: str | None = None,
    binary: set[str] | frozenset[str] = frozenset(),
) -> tuple[bytes, int | None]:
    """A response body, and the JSON header's length when some output travels binary
    (``binary`` names them; ``"*"`` is all)."""
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    tails: list[bytes] = []
    items = []
    for name, value in outputs.items():
        arr = np.asarray(value)
        datatype = datatype_of(arr.dtype)
        item: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if name in binary or "*" in binary:
            if datatype == "BYTES":
                raw = b"".join(
                    struct.pack("<I", len(b)) + b for b in map(_bytes_item, arr.reshape(-1))
                )
            else:
                raw = np.ascontiguousarray(arr, dtype=DTYPES[datatype]).tobytes()
            item["parameters"] = {"binary_data_size": len(raw)}
            tails.append(raw)
        elif datatype == "BYTES":
            item["data"] = [b.decode("utf-8", "replace") for b in map(_bytes_item, arr.reshape(-1))]
        else:
            item["data"] = arr.reshape(-1).tolist()
        items.append(item)
    doc["outputs"] = items
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not tails:
        return head, None
    return head + b"".join(tails), len(head)


def error_body(message: str) -> bytes:
    """The OIP error body: ``{"error": message}``."""
    return json.dumps({"error": message}).encode()
