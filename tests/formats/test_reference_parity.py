"""tvc's safetensors and GGUF parsers are at least as strict as the reference libraries.

A mutation fuzzer damages small seed files in-process — bit flips, cuts, insertions, trailing
bytes, and edits of the header itself: lengths, offsets, dtypes, shapes, JSON syntax,
duplicate keys, overlapping and non-contiguous data, metadata types — and asks both tvc and
the reference (``safetensors.deserialize``, ``gguf.GGUFReader``) for a verdict. No damaged file
may be parsed by tvc and refused by the reference: tvc would commit as tensors a file that its
own users' loaders reject. The other way round (tvc refuses, the reference loads) is allowed
and counted; ``STRICTER_OK`` lists the kinds of difference we accept on purpose.

The generator is a seeded ``random.Random``, so each run sees the same files (as Hypothesis's
``ci`` profile does); a Hypothesis test drives the same mutators with drawn seeds besides.
"""

from __future__ import annotations

import json
import random
import struct
from collections import Counter
from pathlib import Path

import gguf
import numpy as np
import pytest
import safetensors
from gguf.constants import GGMLQuantizationType
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as save_numpy

from tvc.errors import FormatError
from tvc.formats import dtypes
from tvc.formats.gguf import parse_gguf_bytes
from tvc.formats.safetensors import encode_header, parse_safetensors_bytes

SAFETENSORS_MUTANTS = 12_000
GGUF_MUTANTS = 3_000

#: Differences where tvc refuses what the reference loads, on purpose.
STRICTER_OK = {
    "a name given twice (the reference keeps the last; tvc will not guess)",
    "a key given twice inside an ignored extra field",
    "dtype written as a one-key map ({'F32': null}), which serde also reads as an enum",
}

# --- safetensors ------------------------------------------------------------------------------


def _safetensors_seeds() -> list[bytes]:
    rng = np.random.default_rng(11)
    seeds = [
        save_numpy(
            {
                "w": rng.standard_normal((3, 4)).astype(np.float32),
                "b": np.arange(4, dtype=np.int64),
                "m": np.array([True, False, True]),
                "e": np.zeros((0, 3), dtype=np.float16),
            },
            metadata={"format": "np", "step": "7"},
        ),
        save_numpy({"only": np.arange(6, dtype=np.uint8).reshape(2, 3)}),
        save_numpy({}),
    ]
    # dtypes numpy cannot hold, written with tvc's encoder the way the library writes them
    header = {
        "bf16": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
        "f4": {"dtype": "F4", "shape": [4], "data_offsets": [8, 10]},
        "f6": {"dtype": "F6_E3M2", "shape": [4], "data_offsets": [10, 13]},
        "f8": {"dtype": "F8_E4M3", "shape": [3], "data_offsets": [13, 16]},
    }
    seeds.append(encode_header(header) + bytes(range(16)))
    for seed in seeds:
        safetensors.deserialize(seed)  # every seed is valid to begin with
    return seeds


_JUNK_JSON = [
    None,
    True,
    0,
    -1,
    -0.0,
    1.5,
    2**64,
    2**64 - 1,
    10**400,
    "F32",
    "",
    "\udc80",
    [],
    [0],
    [0, 0, 0],
    {},
    {"k": "v"},
    {"k": 1},
    [[[]]],
]


def _junk(r: random.Random) -> object:
    if r.random() < 0.15:
        depth = r.choice([3, 60, 124, 125, 126, 127, 200])
        return json.loads("[" * depth + "]" * depth)
    return r.choice(_JUNK_JSON)


def _split(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _pack(header_text: str, data: bytes, r: random.Random) -> bytes:
    raw = header_text.encode("utf-8", "surrogatepass")
    raw += r.choice([b"", b"", b" " * (-len(raw) % 8), b"\t\n", b"\x00", b" " * 9])
    return struct.pack("<Q", len(raw)) + raw + data


def _edit_tensor(r: random.Random, entry: dict, data_len: int) -> None:
    field = r.choice(["dtype", "shape", "data_offsets", "drop", "extra"])
    if field == "dtype":
        entry["dtype"] = r.choice(
            [*sorted(dtypes.SAFETENSORS_DTYPES), "f32", "F128", "C128", "", {"F32": None}, _junk(r)]
        )
    elif field == "shape":
        shape = list(entry.get("shape") or [1])
        op = r.randrange(7)
        if op == 0:
            shape.append(r.choice([0, 1, 2, 2**32, 2**63, 2**64 - 1]))
        elif op == 1 and shape:
            i = r.randrange(len(shape))
            shape[i] = shape[i] + r.choice([-1, 1, 2**32]) if isinstance(shape[i], int) else 1
        elif op == 2 and shape:
            shape.pop(r.randrange(len(shape)))
        elif op == 3:
            shape = [r.choice([2**32, 2**33, 2**61]), r.choice([2**32, 2**33]), 0]
        elif op == 4:
            shape = [float(x) if isinstance(x, int) else x for x in shape]
        else:
            shape = _junk(r)
        entry["shape"] = shape
    elif field == "data_offsets":
        offsets = list(entry.get("data_offsets") or [0, 0])
        op = r.randrange(6)
        if op == 0 and len(offsets) == 2:
            i = r.randrange(2)
            if isinstance(offsets[i], int):
                offsets[i] += r.choice([-8, -2, -1, 1, 2, 8])
        elif op == 1:
            offsets = offsets[::-1]
        elif op == 2:
            offsets = [data_len, data_len + r.choice([0, 1, 8])]
        elif op == 3:
            offsets = [*offsets, 0]
        elif op == 4 and offsets and isinstance(offsets[-1], int):
            offsets = [offsets[-1] - r.randrange(4), offsets[-1] + r.randrange(4)]
        else:
            offsets = _junk(r)
        entry["data_offsets"] = offsets
    elif field == "drop":
        entry.pop(r.choice(["dtype", "shape", "data_offsets"]), None)
    else:
        entry[r.choice(["x", "dtype_", "__metadata__"])] = _junk(r)


def mutate_safetensors(r: random.Random, seed: bytes) -> bytes:
    """One damaged copy of ``seed``: a byte-level or a header-level mutation, or a few."""
    out = seed
    for _ in range(r.choice([1, 1, 1, 2, 3])):
        out = _one_safetensors_mutation(r, out)
    return out


def _one_safetensors_mutation(r: random.Random, blob: bytes) -> bytes:
    kind = r.randrange(10)
    if kind <= 2 or len(blob) < 8:  # bytes: flip, cut, insert, delete, append
        b = bytearray(blob)
        if not b:
            return bytes(r.randrange(256) for _ in range(r.randrange(12)))
        op = r.randrange(5)
        at = r.randrange(min(len(b), 8 + 96)) if r.random() < 0.7 else r.randrange(len(b))
        if op == 0:
            b[at] ^= 1 << r.randrange(8)
        elif op == 1:
            del b[at:]
        elif op == 2:
            b[at:at] = r.choice([b"{", b"}", b'"', b",", b"[", b"]", b"\\", b"0", b"\xff", b" "])
        elif op == 3:
            del b[at : at + r.randrange(1, 9)]
        else:
            b += bytes(r.randrange(1, 9))
        return bytes(b)
    try:
        header, data = _split(blob)
    except Exception:
        return blob + b"\x00"
    if not isinstance(header, dict):
        return blob[:-1]
    if kind == 3:  # the header length field
        (n,) = struct.unpack("<Q", blob[:8])
        n = r.choice([n + r.randrange(-16, 17), 2**64 - 1, 100_000_001, 0, len(blob)])
        return struct.pack("<Q", max(n, 0)) + blob[8:]
    names = [k for k in header if k != "__metadata__"]
    if kind in (4, 5) and names:
        name = r.choice(names)
        if isinstance(header[name], dict):
            _edit_tensor(r, header[name], len(data))
        else:
            header[name] = {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
    elif kind == 6:  # the data region: cut, grow, or move tensors apart / onto each other
        op = r.randrange(3)
        if op == 0:
            data = data[: r.randrange(len(data) + 1)]
        elif op == 1:
            data = data + bytes(r.randrange(1, 9))
        elif names:
            name = r.choice(names)
            copy = dict(header[name]) if isinstance(header[name], dict) else {}
            header[name + ".copy"] = copy  # the same bytes twice: overlap
    elif kind == 7:  # metadata of every type
        header["__metadata__"] = r.choice(
            [None, {"a": "b"}, {"a": 1}, ["a"], "x", {"a": None}, {"a": "\udcff"}, _junk(r)]
        )
    elif kind == 8 and names:  # a tensor dropped (a gap) or renamed
        name = r.choice(names)
        if r.random() < 0.5:
            del header[name]
        else:
            header[r.choice(["", "__metadata__", name + "\x00", "\ud800"])] = header.pop(name)
    else:  # JSON syntax, on the text
        text = json.dumps(header, ensure_ascii=r.random() < 0.5)
        op = r.randrange(6)
        if op == 0 and names:  # a key twice, textually
            entry = json.dumps({names[0]: header[names[0]]})[1:-1]
            text = "{" + entry + ", " + text[1:]
        elif op == 1:  # constants Python accepts and JSON does not
            text = text.replace("0", r.choice(["NaN", "Infinity", "-Infinity", "-0", "1e400"]), 1)
        elif op == 2:
            at = r.randrange(len(text))
            text = text[:at] + r.choice('{}[]",:\\ 0-eE.n\x01') + text[at + 1 :]
        elif op == 3:
            text = text.replace(",", ",,", 1) if r.random() < 0.5 else text[:-1] + ",}"
        elif op == 4:
            text = r.choice([" ", "\ufeff", "\n"]) + text
        else:
            text = text.replace('"', '"\\ud800', 1)
        return _pack(text, data, r)
    try:
        text = json.dumps(header, ensure_ascii=r.random() < 0.5, allow_nan=True)
    except (ValueError, RecursionError):
        return blob
    return _pack(text, data, r)


def _ref_safetensors(blob: bytes):
    try:
        return dict(safetensors.deserialize(blob))
    except Exception:
        return None


def _tvc_safetensors(blob: bytes):
    try:
        return parse_safetensors_bytes(blob)
    except FormatError as e:
        assert "\n" not in str(e)
        return None


def _stricter_kind(blob: bytes) -> str:
    """Why tvc refused a file the reference loads: must be one of STRICTER_OK."""
    try:
        parse_safetensors_bytes(blob)
    except FormatError as e:
        message = str(e)
    if "twice" in message:
        header, _ = _split(blob)
        if any(isinstance(v, dict) and "x" in v for v in header.values()):
            return "a key given twice inside an ignored extra field"
        return "a name given twice (the reference keeps the last; tvc will not guess)"
    if "unknown dtype {" in message:
        return "dtype written as a one-key map ({'F32': null}), which serde also reads as an enum"
    return message


def _compare_safetensors(blob: bytes, tally: Counter) -> None:
    ref = _ref_safetensors(blob)
    ours = _tvc_safetensors(blob)
    if ours is not None:
        assert ref is not None, f"tvc parses a file the reference refuses: {blob[:300]!r}"
        data_start = 8 + struct.unpack("<Q", blob[:8])[0]
        assert {t.name for t in ours.tensors} == set(ref)
        for t in ours.tensors:
            r = ref[t.name]
            assert (t.dtype, list(t.shape)) == (r["dtype"], list(r["shape"]))
            assert blob[t.offset : t.offset + t.length] == bytes(r["data"])
            assert t.offset >= data_start
        tally["both parse"] += 1
    elif ref is not None:
        tally[_stricter_kind(blob)] += 1
    else:
        tally["both refuse"] += 1


def test_safetensors_mutants_tvc_never_laxer_than_the_reference():
    r = random.Random(20261130)
    seeds = _safetensors_seeds()
    tally: Counter = Counter()
    for _ in range(SAFETENSORS_MUTANTS):
        _compare_safetensors(mutate_safetensors(r, r.choice(seeds)), tally)

    unexpected = {
        k: n for k, n in tally.items() if k not in STRICTER_OK | {"both parse", "both refuse"}
    }
    assert not unexpected, f"tvc refuses for unlisted reasons: {unexpected}"
    # The fuzzer must reach both verdicts often, or it tests nothing.
    assert tally["both parse"] > SAFETENSORS_MUTANTS // 20, tally
    assert tally["both refuse"] > SAFETENSORS_MUTANTS // 2, tally


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_safetensors_mutants_hypothesis(seed):
    r = random.Random(seed)
    _compare_safetensors(mutate_safetensors(r, r.choice(_SEEDS)), Counter())


_SEEDS = _safetensors_seeds()


@pytest.mark.parametrize(
    ("depth", "accepted"), [(125, True), (126, False)]
)  # 2 levels for the header and the tensor entry, then the extra field's lists
def test_json_nesting_limit_is_serde_json_s(safetensors_blob, depth, accepted):
    text = '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":' + "[" * depth
    blob = safetensors_blob((text + "]" * depth + "}}").encode(), b"xy")

    assert (_ref_safetensors(blob) is not None) is accepted
    assert (_tvc_safetensors(blob) is not None) is accepted


# --- GGUF -------------------------------------------------------------------------------------


def _gguf_seed(path: Path, *, alignment: int | None = None) -> bytes:
    rng = np.random.default_rng(5)
    w = gguf.GGUFWriter(str(path), "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_string("general.name", "tiny")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("flag", True)
    w.add_array("tokens", ["a", "bc", "def"])
    w.add_array("ints", [1, 2, 3])
    w.add_tensor("f32", rng.standard_normal((2, 8)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((4,)).astype(np.float16))
    q8 = gguf.quants.quantize(
        rng.standard_normal((1, 32)).astype(np.float32), GGMLQuantizationType.Q8_0
    )
    w.add_tensor("q8", q8, raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def mutate_gguf(r: random.Random, seed: bytes, header_end: int) -> bytes:
    b = bytearray(seed)
    for _ in range(r.choice([1, 1, 2, 3])):
        if not b:
            break
        op = r.randrange(8)
        at = r.randrange(min(len(b), header_end)) if r.random() < 0.8 else r.randrange(len(b))
        if op == 0:
            b[at] ^= 1 << r.randrange(8)
        elif op == 1:  # a length, count, type, dim or offset: rewrite one aligned integer
            at -= at % 4
            width = r.choice([4, 8])
            value = r.choice([0, 1, 2, 3, 4, 5, 8, 9, 12, 13, 31, 32, 33, 2**31, 2**32 - 1])
            b[at : at + width] = value.to_bytes(8, "little")[:width]
        elif op == 2:
            del b[at:]
        elif op == 3:
            del b[at : at + r.randrange(1, 9)]
        elif op == 4:
            b[at:at] = bytes(r.randrange(256) for _ in range(r.randrange(1, 9)))
        elif op == 5:
            b += bytes(r.randrange(1, 64))
        elif op == 6:  # a name or key copied over another: duplicates and reserved keys
            for old, new in [(b"f16", b"f32"), (b"ints", b"flag"), (b"q8", b"f3")]:
                if r.random() < 0.5 and old in b:
                    i = b.index(old)
                    b[i : i + len(new)] = new
            if r.random() < 0.2 and b"tokens" in b:
                i = b.index(b"tokens")
                b[i - 8 : i + 6] = struct.pack("<Q", 12) + b"GGUF.version"
        else:
            b[at] = r.randrange(256)
    return bytes(b)


def test_gguf_mutants_tvc_never_laxer_than_the_reference(tmp_path):
    seeds = [_gguf_seed(tmp_path / "a.gguf"), _gguf_seed(tmp_path / "b.gguf", alignment=64)]
    header_ends = [parse_gguf_bytes(s).tensors[0].offset for s in seeds]
    r = random.Random(1130)
    path = tmp_path / "m.gguf"
    tally: Counter = Counter()
    for _ in range(GGUF_MUTANTS):
        i = r.randrange(len(seeds))
        blob = mutate_gguf(r, seeds[i], header_ends[i])
        try:
            layout = parse_gguf_bytes(blob)
        except FormatError as e:
            assert "\n" not in str(e)
            tally["tvc refuses"] += 1
            continue
        # Only files tvc accepts go to the reader: it trusts counts and could loop for ever.
        path.write_bytes(blob)
        try:
            reader = gguf.GGUFReader(str(path))
        except Exception as e:
            pytest.fail(f"tvc parses a GGUF file GGUFReader refuses ({e!r}): {blob[:200]!r}")
        ours = {t.name: t for t in layout.tensors}
        assert sorted(ours) == sorted(t.name for t in reader.tensors)
        for t in reader.tensors:
            assert (ours[t.name].offset, ours[t.name].length) == (t.data_offset, t.n_bytes)
        tally["both parse"] += 1
    assert tally["both parse"] > GGUF_MUTANTS // 20, tally
    assert tally["tvc refuses"] > GGUF_MUTANTS // 3, tally


def test_gguf_reserved_key_is_refused(tmp_path):
    # GGUFReader files the header's own fields under GGUF.version & co. and refuses a KV key
    # that repeats one; tvc used to accept it.
    path = tmp_path / "r.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("GGUF.kv_count", 1)
    w.add_tensor("t", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    with pytest.raises(KeyError):
        gguf.GGUFReader(str(path))
    with pytest.raises(FormatError, match="reserved"):
        parse_gguf_bytes(path.read_bytes())


def test_gguf_zero_dim_quantized_tensor_is_refused(tmp_path):
    seed = _gguf_seed(tmp_path / "a.gguf")
    layout = parse_gguf_bytes(seed)
    # the q8 tensor info: name, n_dims (u32), dims (u64 each), type, offset; drop its dims
    i = seed.index(b"q8", 0, layout.tensors[0].offset) + 2
    blob = seed[:i] + struct.pack("<I", 0) + seed[i + 4 + 2 * 8 :]

    path = tmp_path / "z.gguf"
    path.write_bytes(blob)
    with pytest.raises(IndexError):
        gguf.GGUFReader(str(path))
    with pytest.raises(FormatError, match="needs a dimension"):
        parse_gguf_bytes(blob)
