"""Chunk codecs: every encoding decodes bit-exact, and every damaged payload is an IntegrityError.

Round trips are Hypothesis properties over every dtype and odd lengths; damage is a flipped byte
(``^ 0xFF``, never a fixed byte, which is a no-op one time in 256) or a truncation.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tvc.errors import IntegrityError
from tvc.store import codecs
from tvc.store.codecs import Codec, decode, encode

FLOATS = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
OTHERS = {
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "Q4_K": 0,
    "Q8_0": 0,
    None: 0,
}
DTYPES = {**FLOATS, **OTHERS}
HEADER_SLACK = 64  # a payload may exceed the data by its header only, and never does for RAW

dtypes = st.sampled_from(list(DTYPES))
float_dtypes = st.sampled_from(list(FLOATS))
# Lengths around element boundaries matter most: 0, 1, itemsize - 1, itemsize + 1, odd sizes.
lengths = st.one_of(st.integers(0, 17), st.integers(0, 3000))


def roundtrip(data: bytes, dtype: str | None, base: bytes | None = None, **kw) -> Codec:
    codec, payload = encode(data, dtype=dtype, itemsize=DTYPES[dtype], base=base, **kw)
    assert isinstance(codec, Codec)
    assert isinstance(payload, bytes)
    assert len(payload) <= len(data), "RAW is a candidate, so nothing larger may win"
    assert decode(codec, payload, len(data), base=base) == data
    if codec != Codec.DELTA:  # only a delta may need its base
        assert decode(codec, payload, len(data)) == data
    out = np.full(len(data), 0xA5, np.uint8)  # stale bytes: every one must be overwritten
    got = decode(codec, payload, len(data), base=base, out=out)
    assert got == data
    if codec != Codec.RAW and data:  # RAW is a view of the payload itself
        assert np.shares_memory(np.frombuffer(got, np.uint8), out)
    return codec


def weights(n: int, dtype: str, seed: int = 0) -> np.ndarray:
    """Trained-weight-like values as raw little-endian words of ``dtype`` (BF16 as uint16)."""
    x = np.random.default_rng(seed).normal(0, 0.02, n)
    return as_dtype(x, dtype)


def as_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":  # truncate F32 to its top half: a valid BF16 of the same value class
        return (x.astype("<f4").view("<u4") >> 16).astype("<u2")
    return x.astype({"F64": "<f8", "F32": "<f4", "F16": "<f2"}[dtype])


# ---------------------------------------------------------------------------------------------
# round trips


@settings(max_examples=150, deadline=None)
@given(dtype=dtypes, data=st.data(), n=lengths)
def test_random_bytes_roundtrip_every_dtype(dtype, data, n):
    blob = data.draw(st.binary(min_size=n, max_size=n))
    roundtrip(blob, dtype)


@settings(max_examples=60, deadline=None)
@given(
    dtype=float_dtypes,
    values=hnp.arrays(
        np.float64,
        st.integers(0, 300),
        elements=st.one_of(
            st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
            st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1e-45, 6e-8, 1e-40]),
        ),
    ),
    tail=st.binary(max_size=7),
)
def test_special_floats_roundtrip(dtype, values, tail):
    """NaN, ±Inf, denormals and −0.0 survive bit-exact in every float layout, with a tail."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        words = as_dtype(values, dtype)
    roundtrip(words.tobytes() + tail[: FLOATS[dtype] - 1], dtype)


@settings(max_examples=40, deadline=None)
@given(dtype=float_dtypes, n=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1))
def test_weights_roundtrip_and_compress(dtype, n, seed):
    blob = weights(n, dtype, seed).tobytes()
    codec = roundtrip(blob, dtype)
    if len(blob) >= 4096:
        assert codec == Codec.FLOAT


@settings(max_examples=50, deadline=None)
@given(
    layout=st.sampled_from([(2, 0), (2, 1), (4, 0), (4, 1), (8, 0), (8, 1)]),
    blob=st.binary(max_size=600),
)
def test_float_payload_of_any_bytes_roundtrips(layout, blob):
    """The FLOAT layout itself, forced on arbitrary bytes: raw planes, zstd planes, tails."""
    itemsize, transform = layout
    if len(blob) < itemsize:
        return
    payload = codecs._encode_float(memoryview(blob), itemsize, transform)
    assert decode(Codec.FLOAT, payload, len(blob)) == blob


@settings(max_examples=80, deadline=None)
@given(itemsize=st.sampled_from([2, 4, 8]), rotate=st.booleans(), blob=st.binary(max_size=800))
def test_plane_split_is_the_byte_transpose_of_the_rotated_words(itemsize, rotate, blob):
    """The split folds the rotation into its shifts: it must equal the plain definition."""
    n = len(blob) // itemsize
    words = np.frombuffer(blob, dtype=f"<u{itemsize}", count=n)
    bits = itemsize * 8
    expected = [
        ((int(w) << 1 | int(w) >> (bits - 1)) & ((1 << bits) - 1)) if rotate else int(w)
        for w in words
    ]
    grid = np.array(expected, dtype=f"<u{itemsize}").view(np.uint8).reshape(n, itemsize)
    planes = codecs._split_planes(words, itemsize, rotate=rotate)
    for k in range(itemsize):
        assert planes[k].tobytes() == grid[:, k].tobytes()


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("n", [0, 1, 3, 4096, 1 << 20])
@pytest.mark.parametrize("fill", [0x00, 0x3C, 0xFF])
def test_constant_data_roundtrips_small(dtype, n, fill):
    blob = bytes([fill]) * n
    codec = roundtrip(blob, dtype)
    if n >= 4096:
        assert codec != Codec.RAW
        assert len(encode(blob, dtype=dtype)[1]) < n // 100


def test_large_incompressible_chunk_stays_raw():
    """Sampling says "incompressible" and RAW wins, without a wasted full zstd pass mattering."""
    blob = os.urandom(1 << 20)
    assert roundtrip(blob, None) == Codec.RAW
    assert roundtrip(blob, "F32") == Codec.RAW


def test_typical_chunks_pick_the_expected_codec():
    text = b"".join(b"layer.%d.attention.weight\n" % i for i in range(500))
    assert roundtrip(text, None) == Codec.ZSTD
    for dtype in FLOATS:
        assert roundtrip(weights(20_000, dtype).tobytes(), dtype) == Codec.FLOAT


def test_float_grouping_beats_plain_zstd_on_weights():
    for dtype in ("BF16", "F32"):
        blob = weights(200_000, dtype).tobytes()
        grouped = len(encode(blob, dtype=dtype)[1])
        plain = len(encode(blob, dtype=None)[1])
        assert grouped < 0.95 * plain


@pytest.mark.parametrize("level", [1, 3, 19])
def test_levels_roundtrip(level):
    blob = weights(5000, "F32").tobytes() + b"\x01\x02"
    roundtrip(blob, "F32", level=level)
    roundtrip(blob, None, level=level)


def test_memoryview_slices_are_accepted():
    buf = bytearray(b"\x00\x07" + weights(4000, "BF16").tobytes() + b"\x09")
    view = memoryview(buf)[2:-1]
    codec, payload = encode(view, dtype="BF16", itemsize=2, base=view)
    assert decode(codec, memoryview(payload), len(view), base=view) == bytes(view)


# ---------------------------------------------------------------------------------------------
# stored formats: payloads written today must decode forever, whatever the encoder becomes


def test_golden_payloads_decode():
    signs = [(-1) ** k * (1 + (k * 37 % 128) / 128) for k in range(64)]
    bf16 = (np.array(signs, "<f4").view("<u4") >> 16).astype("<u2").tobytes()
    float_v1 = bytes.fromhex(
        "010102024000000011000000004b94df2873bc07509be42f78c30c57a0eb347fc8135ca7f03b84cf1863acf7"
        "408bd41f68b3fc4790db246fb8034c97e02b74bf08539ce7307bc40f58a3ec3728b52ffd2040450000107f7f"
        "0100930016"
    )
    assert decode(Codec.FLOAT, float_v1, len(bf16)) == bf16

    data = np.array([1.0, -2.0, 0.5, 3.0, 0, 0, 0, 0], "<f4").tobytes() + b"\x07"
    base = np.array([1.0, -2.0, 0.5, 3.0, 1, 1, 1, 1], "<f4").tobytes() + b"\x05"
    delta_v1 = bytes.fromhex("0101040128b52ffd20217d0000380000ffffff7e0202003b8ec8000b")
    assert decode(Codec.DELTA, delta_v1, len(data), base=base) == data

    raw_planes_and_tail = bytes.fromhex(
        "01010400080000000800000008000000080000000001000000000000000000000000000000000080000000"
        "007f807e800000000007"
    )
    assert decode(Codec.FLOAT, raw_planes_and_tail, len(data)) == data


# ---------------------------------------------------------------------------------------------
# delta


@settings(max_examples=60, deadline=None)
@given(dtype=dtypes, data=st.data(), n=lengths)
def test_delta_against_random_base_roundtrips(dtype, data, n):
    blob = data.draw(st.binary(min_size=n, max_size=n))
    base = data.draw(st.binary(min_size=n, max_size=n))
    roundtrip(blob, dtype, base=base)


@settings(max_examples=60, deadline=None)
@given(
    dtype=dtypes,
    n=st.integers(0, 5000),
    seed=st.integers(0, 2**32 - 1),
    flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), max_size=20),
)
def test_delta_against_near_identical_base_roundtrips(dtype, n, seed, flips):
    base = bytearray(np.random.default_rng(seed).bytes(n))
    blob = bytearray(base)
    for pos, mask in flips:
        if n:
            blob[pos % n] ^= mask
    codec = roundtrip(bytes(blob), dtype, base=bytes(base))
    if n >= 1000 and len(flips) <= 5:
        assert codec == Codec.DELTA


@settings(max_examples=30, deadline=None)
@given(dtype=float_dtypes, n=st.integers(1, 4000), seed=st.integers(0, 2**32 - 1))
def test_finetune_delta_wins_and_roundtrips(dtype, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.02, n)
    tuned = x * (1 + 1e-3 * rng.normal(size=n))
    base, blob = as_dtype(x, dtype).tobytes(), as_dtype(tuned, dtype).tobytes()
    codec = roundtrip(blob, dtype, base=base)
    if n >= 2000:
        assert codec == Codec.DELTA


@settings(max_examples=60, deadline=None)
@given(width=st.sampled_from([2, 4, 8]), data=st.data(), n=st.integers(0, 200))
def test_delta_operations_invert_on_any_bytes(width, data, n):
    blob = data.draw(st.binary(min_size=n, max_size=n))
    base = data.draw(st.binary(min_size=n, max_size=n))
    for op, w in ((codecs._OP_XOR, 1), (codecs._OP_SUB, width)):
        delta = codecs._delta_forward(memoryview(blob), memoryview(base), op, w)
        assert codecs._delta_inverse(delta.copy(), memoryview(base), op, w) == blob


def test_delta_ignored_without_matching_base():
    blob = weights(5000, "F32").tobytes()
    assert encode(blob, dtype="F32", base=blob[:-4])[0] != Codec.DELTA
    assert encode(blob, dtype="F32", base=b"")[0] != Codec.DELTA


def test_delta_needs_its_base():
    base = weights(5000, "BF16").tobytes()
    blob = bytearray(base)
    blob[100] ^= 0xFF
    codec, payload = encode(bytes(blob), dtype="BF16", base=base)
    assert codec == Codec.DELTA
    with pytest.raises(IntegrityError, match="base"):
        decode(codec, payload, len(blob))
    with pytest.raises(IntegrityError, match="base"):
        decode(codec, payload, len(blob), base=base[:-1])


# ---------------------------------------------------------------------------------------------
# damage


def samples() -> list[tuple[Codec, bytes, int, bytes | None]]:
    """One payload per codec and layout: (codec, payload, raw_len, base)."""
    out = []
    rng = np.random.default_rng(7)
    text = b"".join(b"tensor %d of the model\n" % i for i in range(200))
    cases: list[tuple[bytes, str | None, bytes | None]] = [
        (rng.bytes(301), None, None),
        (text, None, None),
        (text, "I32", None),
    ]
    for dtype in FLOATS:
        w = weights(1500, dtype, 1).tobytes() + b"\x05"
        tuned = bytearray(w)
        tuned[::97] = bytes(b ^ 0x01 for b in tuned[::97])
        cases += [(w, dtype, None), (bytes(tuned), dtype, w)]
    cases.append((text[:1000], None, bytes(reversed(text[:1000]))))
    for blob, dtype, base in cases:
        codec, payload = encode(blob, dtype=dtype, base=base)
        out.append((codec, payload, len(blob), base))
    assert {c for c, *_ in out} == set(Codec), "every codec must be under test"
    return out


SAMPLES = samples()


def decodes_contained(codec: Codec, payload: bytes, raw_len: int, base: bytes | None) -> None:
    """Decoding damaged bytes, into a new buffer and into the caller's, either raises
    IntegrityError or gives ``raw_len`` bytes (other bytes: the store's hash check rejects them).
    """
    for out in (None, np.zeros(raw_len, np.uint8)):
        try:
            got = decode(codec, payload, raw_len, base=base, out=out)
        except IntegrityError:
            continue
        assert len(got) == raw_len


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, len(SAMPLES) - 1), pos=st.integers(0, 10**9))
def test_flipped_byte_is_integrity_error_or_other_bytes(which, pos):
    codec, payload, raw_len, base = SAMPLES[which]
    if not payload:
        return
    damaged = bytearray(payload)
    damaged[pos % len(damaged)] ^= 0xFF
    decodes_contained(codec, bytes(damaged), raw_len, base)


@pytest.mark.parametrize("which", range(len(SAMPLES)))
def test_every_single_bit_flip_is_contained(which):
    codec, payload, raw_len, base = SAMPLES[which]
    for pos in range(min(len(payload), 48)):  # headers and frame headers: the risky part
        for bit in range(8):
            damaged = bytearray(payload)
            damaged[pos] ^= 1 << bit
            decodes_contained(codec, bytes(damaged), raw_len, base)


@pytest.mark.parametrize("which", range(len(SAMPLES)))
def test_truncated_payload_is_integrity_error(which):
    codec, payload, raw_len, base = SAMPLES[which]
    for cut in sorted({0, 1, 2, 3, 4, 5, 9, 13, 21, len(payload) // 2, len(payload) - 1}):
        if cut < len(payload):
            for out in (None, np.zeros(raw_len, np.uint8)):
                with pytest.raises(IntegrityError):
                    decode(codec, payload[:cut], raw_len, base=base, out=out)


@pytest.mark.parametrize("window_log", [None, 10])
def test_frame_holding_more_than_it_declares_is_integrity_error(window_log):
    """A frame whose header claims one byte less than it holds would fill a buffer of the
    claimed size exactly: the byte beyond must still be noticed (one-segment and windowed)."""
    import zstandard

    data = bytes(range(256)) * 16
    params = zstandard.ZstdCompressionParameters(window_log=window_log or 0, write_content_size=1)
    frame = bytearray(zstandard.ZstdCompressor(compression_params=params).compress(data))
    descriptor = frame[4]
    assert descriptor >> 6 == 1  # a 2-byte size field, holding size - 256
    at = 5 if descriptor & 0x20 else 6  # after the window byte, which one segment has not
    assert bool(descriptor & 0x20) == (window_log is None)
    declared = int.from_bytes(frame[at : at + 2], "little") + 256
    assert declared == len(data)
    frame[at : at + 2] = (declared - 1 - 256).to_bytes(2, "little")
    for out in (None, np.zeros(len(data) - 1, np.uint8)):
        with pytest.raises(IntegrityError):
            decode(Codec.ZSTD, bytes(frame), len(data) - 1, out=out)


def test_an_out_buffer_of_the_wrong_size_or_type_is_refused():
    codec, payload = encode(weights(100, "F32").tobytes(), dtype="F32")
    for out in (np.zeros(399, np.uint8), np.zeros(100, np.float32), np.zeros((2, 200), np.uint8)):
        with pytest.raises(ValueError, match="out"):
            decode(codec, payload, 400, out=out)


@pytest.mark.parametrize("which", range(len(SAMPLES)))
def test_wrong_raw_len_is_integrity_error(which):
    codec, payload, raw_len, base = SAMPLES[which]
    for wrong in (raw_len - 1, raw_len + 1, raw_len * 2 + 8, 0):
        if wrong == raw_len or wrong < 0:
            continue
        wrong_base = None if base is None else base[:wrong] + bytes(max(0, wrong - len(base)))
        with pytest.raises(IntegrityError):
            decode(codec, payload, wrong, base=wrong_base)


@pytest.mark.parametrize("codec", [4, 7, 255, -1])
def test_unknown_codec_is_integrity_error(codec):
    with pytest.raises(IntegrityError, match="codec"):
        decode(codec, b"abc", 3)


def test_negative_raw_len_is_integrity_error():
    with pytest.raises(IntegrityError):
        decode(Codec.RAW, b"", -1)


def test_frame_declaring_more_than_raw_len_is_refused_before_allocation():
    """A zstd frame that declares 64 MiB for a 10-byte chunk never reaches the decompressor."""
    import zstandard

    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(1 << 26))
    with pytest.raises(IntegrityError, match="declares"):
        decode(Codec.ZSTD, bomb, 10)
    head = b"\x01\x00\x02\x01" + (len(bomb)).to_bytes(4, "little") + (0).to_bytes(4, "little")
    with pytest.raises(IntegrityError):
        decode(Codec.FLOAT, head + bomb, 10)


def test_never_a_foreign_exception_on_garbage():
    rng = np.random.default_rng(3)
    for _ in range(300):
        junk = rng.bytes(int(rng.integers(0, 80)))
        for codec in Codec:
            try:
                decode(codec, junk, int(rng.integers(0, 64)), base=rng.bytes(64))
            except IntegrityError:
                pass


# ---------------------------------------------------------------------------------------------
# threads


def test_two_threads_encode_and_decode_independently():
    blobs = [weights(30_000, dt, seed).tobytes() for seed, dt in enumerate(["BF16", "F32"] * 4)]
    names = ["BF16", "F32"] * 4

    def work(i: int) -> bool:
        codec, payload = encode(blobs[i], dtype=names[i])
        return decode(codec, payload, len(blobs[i])) == blobs[i]

    with ThreadPoolExecutor(2) as pool:
        assert all(pool.map(work, range(len(blobs))))


@pytest.mark.parametrize("hint", [None, 1, 10**9])
def test_plain_hint_never_changes_what_decodes(hint):
    """The hint may skip the plain coders, but whatever is chosen decodes to the data."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal(4096).astype(np.float32)
    tuned = (base * (1 + 1e-3 * rng.standard_normal(4096))).astype(np.float32)
    codec, payload, plain_len = codecs.encode_measured(
        tuned.tobytes(), dtype="F32", base=base.tobytes(), plain_hint=hint
    )
    assert codecs.decode(codec, payload, tuned.nbytes, base=base.tobytes()) == tuned.tobytes()
    assert len(payload) <= tuned.nbytes and plain_len <= tuned.nbytes
    if hint == 10**9:
        assert codec == codecs.Codec.DELTA  # clearly below the hint: plain coders skipped
