"""The GGUF parser against gguf.GGUFReader, hostile headers and fuzzing."""

from __future__ import annotations

import struct
import time

import gguf
import hypothesis.strategies as st
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType, GGUFEndian, GGUFValueType
from hypothesis import given, settings

from tvc.errors import FormatError
from tvc.formats import parse_file
from tvc.formats.gguf import ARRAY_SUMMARY, parse_gguf


def _write(path, *, endian=GGUFEndian.LITTLE, alignment=None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    w = gguf.GGUFWriter(str(path), "llama", endianess=endian)
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_string("general.name", "tiny")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(40)])
    w.add_array("tokenizer.ggml.scores", [float(i) for i in range(40)])
    w.add_array("short", [1, 2, 3])
    w.add_array("names", ["a", "b"])
    f32 = rng.standard_normal((3, 8)).astype(np.float32)
    f16 = rng.standard_normal((16,)).astype(np.float16)
    i32 = np.arange(5, dtype=np.int32)
    q8 = gguf.quants.quantize(
        rng.standard_normal((2, 64)).astype(np.float32), GGMLQuantizationType.Q8_0
    )
    w.add_tensor("token_embd.weight", f32)
    w.add_tensor("blk.0.attn_norm.weight", f16)
    w.add_tensor("blk.0.ids", i32)
    w.add_tensor("blk.0.ffn_up.weight", q8, raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"token_embd.weight": f32, "blk.0.attn_norm.weight": f16, "blk.0.ids": i32,
            "blk.0.ffn_up.weight": q8}  # fmt: skip


@pytest.mark.parametrize("endian", [GGUFEndian.LITTLE, GGUFEndian.BIG])
def test_matches_gguf_reader(tmp_path, endian, check_layout):
    path = tmp_path / "tiny.gguf"
    arrays = _write(path, endian=endian)
    blob = path.read_bytes()

    layout = parse_file(path)

    check_layout(layout, blob)
    assert layout.format == "gguf"
    reader = gguf.GGUFReader(str(path))
    ours = {t.name: t for t in layout.tensors}
    assert sorted(ours) == sorted(t.name for t in reader.tensors)
    for ref in reader.tensors:
        t = ours[ref.name]
        assert t.dtype == ref.tensor_type.name
        assert t.shape == tuple(int(d) for d in reversed(ref.shape))  # numpy order
        assert (t.offset, t.length) == (ref.data_offset, ref.n_bytes)
        assert blob[t.offset : t.offset + t.length] == ref.data.tobytes()
    if endian == GGUFEndian.LITTLE:
        for name, arr in arrays.items():
            t = ours[name]
            assert blob[t.offset : t.offset + t.length] == arr.tobytes()
    else:
        assert layout.metadata["GGUF.byteorder"] == "big"
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if field.types[0] == GGUFValueType.ARRAY and len(field.data) > ARRAY_SUMMARY:
            expect = {"type": field.types[-1].name, "length": len(field.data)}
            assert layout.metadata[key] == expect
        else:
            assert layout.metadata[key] == field.contents(), key
    assert layout.metadata["GGUF.version"] == 3


def test_segments_and_itemsizes(tmp_path):
    path = tmp_path / "tiny.gguf"
    _write(path, alignment=64)

    layout = parse_file(path)

    segs = {s.tensor: s for s in layout.segments if s.tensor}
    assert {n: (s.dtype, s.itemsize) for n, s in segs.items()} == {
        "token_embd.weight": ("F32", 4),
        "blk.0.attn_norm.weight": ("F16", 2),
        "blk.0.ids": ("I32", 4),
        "blk.0.ffn_up.weight": ("Q8_0", 0),
    }
    data_start = min(s.offset for s in segs.values())
    assert all((s.offset - data_start) % 64 == 0 for s in segs.values())
    assert layout.metadata["general.alignment"] == 64
    assert layout.segments[0].tensor is None


def test_magic_without_extension(tmp_path):
    path = tmp_path / "model.bin"
    _write(path)

    assert parse_file(path).format == "gguf"


def test_no_tensors(tmp_path):
    path = tmp_path / "empty.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    layout = parse_file(path)

    assert layout.tensors == []
    assert [s.tensor for s in layout.segments] == [None]


def test_vocabulary_is_fast(tmp_path):
    """A 150k-token vocabulary takes GGUFReader seconds; the header walk must not."""
    path = tmp_path / "vocab.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(150_000)])
    w.add_tensor("x", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    start = time.perf_counter()
    layout = parse_file(path)

    assert layout.metadata["tokenizer.ggml.tokens"] == {"type": "STRING", "length": 150_000}
    assert time.perf_counter() - start < 5  # generous: the CI machine is shared


# --- hostile files -------------------------------------------------------------------------


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _gguf(kv: bytes = b"", n_kv: int = 0, infos: bytes = b"", n_tensors: int = 0, *,
          version: int = 3, tail: bytes = b"") -> bytes:  # fmt: skip
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + kv + infos + tail


def _info(name: str, dims: list[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    packed = struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
    return _s(name) + packed + struct.pack("<IQ", ggml_type, offset)


def _kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return _s(key) + struct.pack("<I", vtype) + payload


def _patch_info(blob: bytes, name: str, *, n_dims=None, ggml_type=None, offset=None) -> bytes:
    at = blob.index(_s(name)) + 8 + len(name)
    (dims,) = struct.unpack_from("<I", blob, at)
    out = bytearray(blob)
    if n_dims is not None:
        struct.pack_into("<I", out, at, n_dims)
    at += 4 + 8 * dims
    if ggml_type is not None:
        struct.pack_into("<I", out, at, ggml_type)
    if offset is not None:
        struct.pack_into("<Q", out, at + 4, offset(struct.unpack_from("<Q", blob, at + 4)[0]))
    return bytes(out)


U8, STR, ARR, U32 = GGUFValueType.UINT8, GGUFValueType.STRING, GGUFValueType.ARRAY, 4
HAND_MADE = {
    "too short": b"GGUF\x03\x00",
    "version 1": _gguf(version=1),
    "version 4": _gguf(version=4),
    "counts beyond file": _gguf(n_kv=2**40, n_tensors=2**40),
    "array length huge": _gguf(_kv("a", ARR, struct.pack("<IQ", U8, 2**62)), 1),
    "string array length huge": _gguf(_kv("a", ARR, struct.pack("<IQ", STR, 2**40)), 1),
    "string length huge": _gguf(_kv("a", STR, struct.pack("<Q", 2**63)), 1),
    "key length huge": _gguf(struct.pack("<Q", 2**63) + b"k", 1),
    "unknown value type": _gguf(_kv("a", 13, b"\0" * 8), 1),
    "unknown array type": _gguf(_kv("a", ARR, struct.pack("<IQ", 99, 1) + b"\0" * 8), 1),
    "arrays nested deep": _gguf(
        _kv("a", ARR, struct.pack("<IQ", ARR, 1) * 20 + struct.pack("<IQ", U8, 0)), 1
    ),
    "duplicate key": _gguf(_kv("a", U8, b"\x01") * 2, 2),
    "key not utf-8": _gguf(_kv(b"\xff\xfe", U8, b"\x01"), 1),
    "alignment zero": _gguf(_kv("general.alignment", U32, struct.pack("<I", 0)), 1),
    "alignment three": _gguf(_kv("general.alignment", U32, struct.pack("<I", 3)), 1),
    "alignment wrong type": _gguf(_kv("general.alignment", U8, b"\x20"), 1),
    "five dims": _gguf(infos=_info("t", [1, 1, 1, 1, 1]), n_tensors=1, tail=bytes(64)),
    "unknown ggml type": _gguf(infos=_info("t", [4], ggml_type=77), n_tensors=1, tail=bytes(64)),
    "partial block": _gguf(infos=_info("t", [33], ggml_type=8), n_tensors=1, tail=bytes(128)),
    "duplicate tensor": _gguf(infos=_info("t", [1]) * 2, n_tensors=2, tail=bytes(64)),
    "tensor past end": _gguf(infos=_info("t", [1000]), n_tensors=1, tail=bytes(64)),
    "tensor size huge": _gguf(infos=_info("t", [2**63, 2**63]), n_tensors=1, tail=bytes(64)),
}


@pytest.mark.parametrize("case", sorted(HAND_MADE))
def test_hand_made_hostile_header(tmp_path, expect_format_error, case):
    path = tmp_path / "bad.gguf"
    path.write_bytes(HAND_MADE[case])

    start = time.perf_counter()
    expect_format_error(path, parse_file)
    assert time.perf_counter() - start < 2


def _real_blob(tmp_path) -> bytes:
    _write(tmp_path / "ok.gguf")
    return (tmp_path / "ok.gguf").read_bytes()


EDITS = {
    "truncated": lambda b: b[:-100],  # the last tensor is 136 bytes, then padding
    "bad magic": lambda b: b"GGUX" + b[4:],
    "offset past end": lambda b: _patch_info(b, "blk.0.ids", offset=lambda o: 2**40),
    "offset unaligned": lambda b: _patch_info(b, "blk.0.ids", offset=lambda o: o + 4),
    "overlap": lambda b: _patch_info(b, "blk.0.ids", offset=lambda o: 0),
    "unknown type": lambda b: _patch_info(b, "blk.0.ids", ggml_type=999),
    "too many dims": lambda b: _patch_info(b, "blk.0.ids", n_dims=9),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_damaged_real_file(tmp_path, expect_format_error, case):
    path = tmp_path / "bad.gguf"
    path.write_bytes(EDITS[case](_real_blob(tmp_path)))

    expect_format_error(path, parse_file)


@pytest.fixture(scope="module")
def valid_blob(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("gguf") / "fuzz.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.name", "fuzz")
    w.add_array("tokens", ["a", "bb", "ccc"])
    w.add_uint32("n", 7)
    w.add_tensor("a", np.arange(8, dtype=np.float32))
    w.add_tensor("b", np.arange(4, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fuzz_mutated_file(data, valid_blob, mutate, scratch, check_layout):
    blob = mutate(data, valid_blob)
    path = scratch / "fuzz.gguf"
    path.write_bytes(blob)
    try:
        layout = parse_gguf(path)
    except FormatError as e:
        assert "\n" not in str(e)
        return
    check_layout(layout, blob)
