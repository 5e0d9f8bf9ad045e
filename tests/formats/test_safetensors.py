"""The safetensors parser against the reference implementation, hostile headers and fuzzing."""

from __future__ import annotations

import json
import struct

import hypothesis.strategies as st
import numpy as np
import pytest
import safetensors
from hypothesis import HealthCheck, given, settings
from safetensors import safe_open
from safetensors.numpy import save_file

from tvc.errors import FormatError
from tvc.formats import iter_chunks, parse_file
from tvc.formats.safetensors import parse_safetensors

NUMPY_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "C64": np.complex64,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    out = {}
    for i, (name, dt) in enumerate(NUMPY_DTYPES.items()):
        shape = [(3, 5), (7,), (), (2, 0, 4), (2, 3, 4)][i % 5]
        out[f"layer.{i}.{name.lower()}"] = np.asarray(rng.standard_normal(shape) * 50).astype(dt)
    return out


def test_every_numpy_dtype_matches_safe_open(tmp_path):
    arrays = _arrays()
    path = tmp_path / "model.safetensors"
    save_file(arrays, str(path), metadata={"format": "np", "note": "hi"})
    blob = path.read_bytes()

    layout = parse_file(path)

    assert layout.format == "safetensors"
    assert layout.metadata == {"__metadata__": {"format": "np", "note": "hi"}}
    with safe_open(str(path), framework="np") as ref:
        assert sorted(t.name for t in layout.tensors) == sorted(ref.keys())
        for t in layout.tensors:
            sl = ref.get_slice(t.name)
            assert t.dtype == sl.get_dtype()
            assert list(t.shape) == sl.get_shape()
            assert blob[t.offset : t.offset + t.length] == arrays[t.name].tobytes()
    offsets = [t.offset for t in layout.tensors]
    assert offsets == sorted(offsets)
    tensor_segments = [s for s in layout.segments if s.tensor]
    assert {s.tensor for s in tensor_segments} == {t.name for t in layout.tensors if t.length}
    for seg in tensor_segments:
        assert seg.itemsize == np.dtype(NUMPY_DTYPES[seg.dtype]).itemsize
    assert layout.segments[0].tensor is None  # the header is opaque


def test_torch_only_dtypes_match_safe_open(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    tensors = {
        "bf16": torch.arange(6, dtype=torch.float32).to(torch.bfloat16).reshape(2, 3),
        "f8_e4m3": torch.linspace(-2, 2, 8).to(torch.float8_e4m3fn),
        "f8_e5m2": torch.linspace(-2, 2, 8).to(torch.float8_e5m2),
    }
    path = tmp_path / "t.safetensors"
    save_torch(tensors, str(path))
    blob = path.read_bytes()

    layout = parse_file(path)

    by_name = {t.name: t for t in layout.tensors}
    assert {n: t.dtype for n, t in by_name.items()} == {
        "bf16": "BF16",
        "f8_e4m3": "F8_E4M3",
        "f8_e5m2": "F8_E5M2",
    }
    with safe_open(str(path), framework="pt") as ref:
        for name, t in by_name.items():
            assert t.dtype == ref.get_slice(name).get_dtype()
            raw = tensors[name].reshape(-1).view(torch.uint8).numpy().tobytes()
            assert blob[t.offset : t.offset + t.length] == raw


@pytest.mark.parametrize(
    ("dtype", "shape", "nbytes"),
    [("F4", [2, 4], 4), ("F6_E2M3", [4], 3), ("F6_E3M2", [8], 6), ("F8_E8M0", [3], 3)],
)
def test_packed_dtypes_are_sized_by_bits(tmp_path, safetensors_blob, dtype, shape, nbytes):
    blob = safetensors_blob(
        {"t": {"dtype": dtype, "shape": shape, "data_offsets": [0, nbytes]}}, b"\x11" * nbytes
    )
    safetensors.deserialize(blob)  # the reference accepts it too
    path = tmp_path / "p.safetensors"
    path.write_bytes(blob)

    layout = parse_file(path)

    (seg,) = [s for s in layout.segments if s.tensor]
    assert (seg.dtype, seg.length) == (dtype, nbytes)
    assert seg.itemsize == (0 if dtype.startswith(("F4", "F6")) else 1)


@pytest.mark.parametrize(
    ("header", "data"),
    [
        # a gap between two tensors
        ({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
          "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}}, bytes(12)),
        # bytes before the first tensor
        ({"a": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}}, bytes(8)),
        # bytes after the last tensor
        ({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, bytes(5)),
        # an empty tensor placed inside another one
        ({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
          "e": {"dtype": "U8", "shape": [0], "data_offsets": [2, 2]}}, bytes(4)),
    ],
)  # fmt: skip
def test_gaps_and_trailing_bytes_are_refused_as_the_reference_does(
    tmp_path, safetensors_blob, expect_format_error, header, data
):
    # tvc once kept such bytes as opaque segments; the safetensors library refuses the file
    # ("invalid offset", "file not fully covered"), so tvc does too (use --no-parse to keep it).
    blob = safetensors_blob(header, data)
    with pytest.raises(safetensors.SafetensorError):
        safetensors.deserialize(blob)
    path = tmp_path / "g.safetensors"
    path.write_bytes(blob)

    expect_format_error(path, parse_file)


def test_empty_tensors_tile_with_the_others(tmp_path, safetensors_blob):
    header = {
        "b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]},
        "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
        "empty": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
        "last": {"dtype": "F32", "shape": [2, 0], "data_offsets": [8, 8]},
    }
    blob = safetensors_blob(header, bytes(range(8)))
    safetensors.deserialize(blob)
    path = tmp_path / "g.safetensors"
    path.write_bytes(blob)
    start = len(blob) - 8

    layout = parse_file(path)

    assert [(s.offset - start, s.length, s.tensor) for s in layout.segments[1:]] == [
        (0, 4, "a"),
        (4, 4, "b"),
    ]
    assert [t.name for t in layout.tensors] == ["a", "empty", "b", "last"]
    chunks = list(iter_chunks(blob, layout))
    assert [c.tensor for c in chunks] == [None, "a", "b"]


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


HOSTILE = {
    "too short": lambda b: b"\x01\x02",
    "header past end": lambda b: struct.pack("<Q", 1000) + b"{}",
    "header over limit": lambda b: struct.pack("<Q", 100_000_001) + b"{}" * 10,
    "header length huge": lambda b: struct.pack("<Q", 2**64 - 1) + b"{}",
    "not utf-8": lambda b: b(b"\xff\xfe{}"),
    "not json": lambda b: b(b"{not json"),
    "json array": lambda b: b(b"[1, 2]"),
    "json string": lambda b: b(b'"x"'),
    "deep json": lambda b: b(b"[" * 100_000 + b"]" * 100_000),
    "huge int": lambda b: b(b'{"t": {"dtype": "F32", "shape": [' + b"9" * 5000 + b"]}}"),
    "duplicate key": lambda b: b(b'{"t": 1, "t": 2}'),
    "entry not object": lambda b: b({"t": [1]}),
    "unknown dtype": lambda b: b({"t": _entry(dtype="F128")}, bytes(8)),
    "dtype not string": lambda b: b({"t": _entry(dtype=4)}, bytes(8)),
    "shape not list": lambda b: b({"t": {**_entry(), "shape": 2}}, bytes(8)),
    "negative dim": lambda b: b({"t": _entry(shape=(-2,))}, bytes(8)),
    "float dim": lambda b: b({"t": _entry(shape=(2.0,))}, bytes(8)),
    "bool dim": lambda b: b({"t": _entry(shape=(True, 2))}, bytes(8)),
    "missing offsets": lambda b: b({"t": {"dtype": "F32", "shape": [2]}}, bytes(8)),
    "three offsets": lambda b: b({"t": _entry(offsets=(0, 4, 8))}, bytes(8)),
    "begin after end": lambda b: b({"t": _entry(offsets=(8, 0))}, bytes(8)),
    "negative begin": lambda b: b({"t": _entry(offsets=(-8, 0))}, bytes(8)),
    "size mismatch": lambda b: b({"t": _entry(offsets=(0, 12))}, bytes(12)),
    "out of range": lambda b: b({"t": _entry(offsets=(8, 16))}, bytes(8)),
    "truncated data": lambda b: b({"t": _entry(shape=(4,), offsets=(0, 16))}, bytes(15)),
    "overlap": lambda b: b({"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(4, 12))}, bytes(12)),
    "absurd shape": lambda b: b({"t": _entry(shape=(2**62, 2**62, 2**62))}, bytes(8)),
    "absurd shape with zero": lambda b: b({"t": _entry(shape=[2**4000] * 50 + [0])}, bytes(8)),
    "odd bits": lambda b: b({"t": _entry(dtype="F4", shape=(3,), offsets=(0, 2))}, bytes(2)),
    "metadata not dict": lambda b: b({"__metadata__": ["a"]}),
    "metadata not str": lambda b: b({"__metadata__": {"a": 1}}),
    "trailing bytes": lambda b: b({"t": _entry()}, bytes(9)),
    "gap": lambda b: b({"t": _entry(offsets=(8, 16))}, bytes(16)),
    "NaN": lambda b: b(b'{"t": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0], "x": NaN}}'),
    "infinite float": lambda b: b(
        b'{"t": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0], "x": 1e999}}'
    ),
    "lone surrogate": lambda b: b(
        b'{"\\ud800": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}'
    ),
    "minus zero dim": lambda b: b(b'{"t": {"dtype": "U8", "shape": [-0], "data_offsets": [0, 0]}}'),
    "overflow before zero": lambda b: b({"t": _entry(shape=(2**32, 2**32, 0), offsets=(0, 0))}),
    "dim beyond u64": lambda b: b({"t": _entry(shape=(2**64, 0), offsets=(0, 0))}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_header_is_a_format_error(tmp_path, safetensors_blob, expect_format_error, case):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(HOSTILE[case](safetensors_blob))

    expect_format_error(path, parse_file)


def test_extension_never_falls_back_to_opaque(tmp_path, expect_format_error):
    path = tmp_path / "notes.safetensors"
    path.write_bytes(b"just some text, no header here")

    message = expect_format_error(path, parse_file, match="header length")

    assert "safetensors" in message


@pytest.fixture(scope="module")
def valid_blob(safetensors_blob) -> bytes:
    header = {
        "__metadata__": {"k": "v"},
        "w": _entry(shape=(2, 3), offsets=(0, 24)),
        "b": _entry(dtype="BF16", shape=(4,), offsets=(24, 32)),
        "z": _entry(dtype="I8", shape=(0, 5), offsets=(32, 32)),
    }
    return safetensors_blob(header, bytes(range(32)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_mutated_file(data, valid_blob, mutate, scratch, check_layout):
    blob = mutate(data, valid_blob)
    path = scratch / "fuzz.safetensors"
    path.write_bytes(blob)
    try:
        layout = parse_safetensors(path)
    except FormatError as e:
        assert "\n" not in str(e)
        return
    check_layout(layout, blob)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "BF16", "U8", "F4", "BOOL", "X"]) | _json,
        "shape": st.lists(st.integers(-1, 6), max_size=3) | _json,
        "data_offsets": st.lists(st.integers(-2, 40), min_size=2, max_size=2) | _json,
    }
)


@settings(max_examples=150, deadline=None)
@given(
    header=st.dictionaries(st.text(max_size=6), _entries | _json, max_size=4),
    data_len=st.integers(0, 48),
)
def test_fuzz_random_header(header, data_len, safetensors_blob, scratch, check_layout):
    blob = safetensors_blob(json.dumps(header).encode(), bytes(data_len))
    path = scratch / "random.safetensors"
    path.write_bytes(blob)
    try:
        layout = parse_safetensors(path)
    except FormatError:
        return
    check_layout(layout, blob)
