"""Chunk codecs: how one chunk's raw bytes become the payload stored in a pack, and back.

Vocabulary
- *codec*: the encoding of one chunk, recorded per chunk in the pack index as a small integer
  (``Codec``). ``encode`` tries the codecs that make sense for the chunk and keeps the smallest
  payload; ``decode`` needs nothing but the codec number, the payload, the raw length and, for a
  delta, the base.
- *payload*: the encoded bytes of one chunk. RAW and ZSTD payloads are the bytes themselves and
  one plain zstd frame; FLOAT and DELTA payloads open with a small versioned header, so they
  describe themselves and old packs stay readable when the encoder changes.
- *plane*: for an array of fixed-width floats, the sequence of the k-th byte of every element.
  The byte that holds the exponent is highly skewed (a few exponents dominate trained weights)
  and compresses to about a third, while the mantissa bytes are close to random. Mixed together
  they hide that from zstd; apart, each plane gets its own entropy coding ("byte grouping", as
  ZipNN does). A plane that zstd does not shrink is stored raw.
- *transform*: a bit permutation applied to every element before its bytes are split into
  planes. Rotating the element left by one bit moves the sign to the lowest bit, so the top byte
  of a BF16/F32/F64 holds exponent bits only instead of sign + seven exponent bits.
- *base*: for a DELTA chunk, the same piece of the same tensor in the parent version (same
  length). The payload holds the delta of the data against it: for floats the wrapping integer
  difference of each element's bit pattern (zigzag-coded, so small changes either way are small
  numbers), for anything else ``data XOR base``. A fine-tune leaves sign, exponent and high
  mantissa bits mostly unchanged, so the delta's high planes are nearly all zero.

Payloads (all integers little-endian)
- RAW: the bytes. ZSTD: one zstd frame that declares its content size.
- FLOAT v1: ``u8 version=1, u8 transform (0 none, 1 rotate), u8 itemsize (2|4|8), u8 flags``
  (bit k set: plane k is a zstd frame, else raw), ``u32 length[itemsize]`` (stored bytes of each
  plane), the planes in byte order (plane 0 = least significant byte of each element after the
  transform), then the ``raw_len % itemsize`` trailing bytes, raw.
- DELTA v1: ``u8 version=1, u8 op (0 XOR, 1 SUB), u8 width, u8 inner codec (ZSTD or FLOAT)``,
  then the inner payload of the delta. SUB works on ``width``-byte words; bytes past the last
  whole word are XORed.

Decoding treats every payload as untrusted: any inconsistency is an ``IntegrityError``, and no
allocation is ever larger than the chunk's raw length. The store verifies the BLAKE3 of what
``decode`` returns, so a flipped bit that still decodes is caught there.
"""

from __future__ import annotations

import enum
import struct
import threading

import zstandard

from tvc.errors import IntegrityError
from tvc.store.lazy import lazy_module

np = lazy_module("numpy", globals(), "np")  # numpy loads on first use: cold starts skip it

__all__ = ["Codec", "decode", "encode"]


class Codec(enum.IntEnum):
    """Codec numbers as stored in the pack index: never renumber, only append."""

    RAW = 0
    ZSTD = 1
    FLOAT = 2
    DELTA = 3


# Float dtypes whose elements we split into byte planes, with the transform each gets. F16's top
# byte mixes exponent and mantissa bits either way; rotating still helps it a little (0.0004 of
# the file on MiniLM), so every float rotates.
_FLOAT_LAYOUT: dict[str, tuple[int, int]] = {  # dtype -> (itemsize, transform)
    "BF16": (2, 1),
    "F16": (2, 1),
    "F32": (4, 1),
    "F64": (8, 1),
}
_TRANSFORM_NONE = 0
_TRANSFORM_ROTATE = 1  # rotate each element left by one bit: the sign moves to the lowest bit

_FLOAT_VERSION = 1
_FLOAT_HEAD = struct.Struct("<BBBB")  # version, transform, itemsize, plane flags (bit k: zstd)
_DELTA_VERSION = 1
_DELTA_HEAD = struct.Struct("<BBBB")  # version, op, element width, inner codec (ZSTD or FLOAT)
_OP_XOR = 0  # data XOR base, byte by byte
_OP_SUB = 1  # zigzag(data - base) per little-endian word of the element width, wrapping

# Buffers from this size on are judged by a sample (8 slices of 8 KiB spread over the buffer)
# before a full zstd pass: a sample zstd cannot shrink by 1.5 % means random mantissa bytes or
# packed quantized blocks, and a float chunk whose sample does not beat its FLOAT payload is
# ordinary weights, where plain zstd never wins (a full level-3 pass over an F32 delta costs
# 115 ms per 4 MiB against 10 ms for everything else). Smaller buffers are cheaper to just try.
_SAMPLE_MIN = 256 * 1024
_SAMPLE_SLICES = 8
_SAMPLE_SLICE = 8 * 1024
_SAMPLE_KEEP = 0.985
# When a sample only ties with FLOAT (float deltas: zstd 0.1486 vs planes 0.1487 of the sample),
# the full pass loses (0.159 vs 0.149 of the chunk) and costs 13 ms per 4 MiB: it must win the
# sample by this factor. Skipped only when a sample says so; small buffers are still tried.
_SAMPLE_MARGIN = 0.95

_local = threading.local()

# What decoders return: bytes, or a byte view of a buffer nobody else holds.
Buffer = bytes | memoryview


def _plane_params() -> zstandard.ZstdCompressionParameters:
    """zstd tuned to be (almost) a pure Huffman coder: the coder of every plane.

    An exponent plane has ~2.7 bits of entropy per byte but few useful repeats. zstd's default
    levels greedily replace literals by short matches that cost more than the Huffman-coded
    literals they replace (level 3 reaches 0.41 of the plane, order-0 entropy is 0.33). A tiny
    hash table and the longest minimum match keep only the long runs, and 256 KiB windows keep
    blocks at their 128 KiB maximum so each block still gets its own Huffman table: 0.33 of the
    plane at ~800 MB/s, and the frame is still plain zstd for the decoder. On mantissa planes and
    on delta planes it is as small as level 3 (±0.001) and 2-4x faster, so it codes them all.
    """
    return zstandard.ZstdCompressionParameters(
        window_log=18,
        hash_log=6,
        chain_log=6,
        search_log=1,
        min_match=7,
        target_length=0,
        strategy=zstandard.STRATEGY_FAST,
        write_content_size=1,
    )


def _scratch(slot: str, nbytes: int) -> np.ndarray:
    """A per-thread reusable byte buffer for the encoder's temporaries.

    Encoding one 4 MiB piece used to allocate ~40 MiB of short-lived arrays (rotated words,
    shifted words per plane); each fresh multi-MiB allocation is a new mapping whose pages
    fault in again, which made page faults a third of a large commit's time. Slots are
    per thread and only used within one call, so nothing outlives its use.
    """
    cache = getattr(_local, "scratch", None)
    if cache is None:
        cache = _local.scratch = {}
    buf = cache.get(slot)
    if buf is None or buf.nbytes < nbytes:
        buf = cache[slot] = np.empty(max(nbytes, 1 << 16), np.uint8)
    return buf[:nbytes]


def _compressor(level: int | None) -> zstandard.ZstdCompressor:
    """A per-thread compressor for ``level`` (None: the plane coder).

    zstd contexts are not thread-safe but release the GIL, so the store's encoder threads each
    get their own and run in parallel.
    """
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    cctx = cache.get(level)
    if cctx is None:
        if level is None:
            cctx = zstandard.ZstdCompressor(compression_params=_plane_params())
        else:
            cctx = zstandard.ZstdCompressor(level=level, write_content_size=True)
        cache[level] = cctx
    return cctx


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx = getattr(_local, "decompressor", None)
    if dctx is None:
        dctx = _local.decompressor = zstandard.ZstdDecompressor()
    return dctx


# ---------------------------------------------------------------------------------------------
# encode


def encode(
    data: bytes | memoryview,
    *,
    dtype: str | None = None,
    itemsize: int = 0,
    base: bytes | memoryview | None = None,
    level: int = 3,
) -> tuple[Codec, bytes]:
    """Encode one chunk with whichever sensible codec gives the smallest payload.

    ``dtype`` (canonical name, or None for opaque bytes) decides whether byte planes make sense;
    only F16/BF16/F32/F64 get FLOAT, every other dtype is RAW/ZSTD (and DELTA). ``itemsize`` is
    accepted for the store's convenience but the float layout comes from ``dtype``, so a wrong
    itemsize cannot produce an undecodable payload. With ``base`` of the same length the DELTA
    candidates are tried as well, so one call returns the smallest of plain and delta. ``level``
    is the zstd level of plain zstd (ZSTD, and the ZSTD inside DELTA); planes always use the
    plane coder. RAW wins whenever nothing else is smaller: the payload is never longer than the
    data.
    """
    codec, payload, _plain_len = encode_measured(data, dtype=dtype, base=base, level=level)
    return codec, payload


def encode_measured(
    data: bytes | memoryview,
    *,
    dtype: str | None = None,
    base: bytes | memoryview | None = None,
    plain_hint: int | None = None,
    level: int = 3,
) -> tuple[Codec, bytes, int]:
    """``encode``, plus the size the best non-delta codec reached (or is expected to reach).

    The store records that size so ``tvc stats`` can tell what delta coding saved apart from
    what compression saved, without encoding a chunk twice. ``plain_hint`` — what the base
    compressed to without delta — lets a fine-tuned piece skip its plain encodings when the delta
    is clearly smaller (below 90 % of the hint): same tensor, same shape, same compressibility,
    and the plain coders cost as much time as the delta coder.
    """
    view = memoryview(data).cast("B")
    raw_len = len(view)
    best: tuple[Codec, bytes] = (Codec.RAW, bytes(data) if isinstance(data, bytes) else bytes(view))
    layout = _FLOAT_LAYOUT.get(dtype) if dtype is not None else None
    usable_base = base is not None and raw_len and len(memoryview(base).cast("B")) == raw_len
    if usable_base:
        delta = _encode_delta(view, memoryview(base).cast("B"), layout, level)
        if delta is not None and plain_hint and len(delta[1]) < 0.9 * min(plain_hint, raw_len):
            return delta[0], delta[1], min(plain_hint, raw_len)
    for cand in _plain_candidates(view, layout, level):
        if len(cand[1]) < len(best[1]):
            best = cand
    plain_len = len(best[1])
    if usable_base and delta is not None and len(delta[1]) < len(best[1]):
        best = delta
    return best[0], best[1], plain_len


def _encode_delta(
    view: memoryview, bview: memoryview, layout: tuple[int, int] | None, level: int
) -> tuple[Codec, bytes] | None:
    """The smallest DELTA payload of ``view`` against ``bview`` (same length)."""
    # Floats: the integer difference of the bit patterns. A small change of a weight is a small
    # difference of its (sign, exponent, mantissa) word, whereas XOR turns every carry into a
    # run of set bits: on MiniLM with 1e-3 noise SUB is 7 % smaller than XOR on F32, 11 % on
    # BF16, 20 % on F16. The delta words are small integers, so they are grouped as stored.
    op, width = (_OP_SUB, layout[0]) if layout is not None else (_OP_XOR, 1)
    delta = _delta_forward(view, bview, op, width)
    inner_layout = (width, _TRANSFORM_NONE) if layout is not None else None
    best: tuple[Codec, bytes] | None = None
    for inner, payload in _plain_candidates(memoryview(delta), inner_layout, level):
        if best is None or _DELTA_HEAD.size + len(payload) < len(best[1]):
            head = _DELTA_HEAD.pack(_DELTA_VERSION, op, width, inner)
            best = (Codec.DELTA, head + payload)
    return best


def _delta_forward(data: memoryview, base: memoryview, op: int, width: int) -> np.ndarray:
    """The delta of ``data`` against ``base`` (same length) as a flat uint8 array.

    Trailing bytes that do not fill a word are XORed, as are all bytes for ``_OP_XOR``. Computed
    in place in this thread's "delta" scratch buffer: valid until the thread's next call.
    """
    a, b = np.frombuffer(data, np.uint8), np.frombuffer(base, np.uint8)
    out = _scratch("delta", len(a))  # consumed by the caller before this thread encodes again
    if op != _OP_SUB:
        return np.bitwise_xor(a, b, out=out)
    n = len(a) // width
    words = np.dtype(f"<u{width}")
    signed = out[: n * width].view(f"<i{width}")
    np.subtract(a[: n * width].view(words), b[: n * width].view(words), out=signed.view(words))
    sign = _scratch("shifted", n * width).view(signed.dtype)
    np.right_shift(signed, np.array(width * 8 - 1, signed.dtype), out=sign)
    signed <<= np.array(1, signed.dtype)
    signed ^= sign
    np.bitwise_xor(a[n * width :], b[n * width :], out=out[n * width :])
    return out


def _delta_inverse(
    delta: np.ndarray, base: memoryview, op: int, width: int, out: np.ndarray | None = None
) -> memoryview:
    """Inverse of ``_delta_forward``: the data, given its delta and its base (into ``out``).

    ``delta`` is overwritten (it is the caller's scratch).
    """
    d, b = delta, np.frombuffer(base, np.uint8)
    if out is None:
        out = np.empty(len(d), np.uint8)
    if op != _OP_SUB:
        return memoryview(np.bitwise_xor(d, b, out=out))
    n = len(d) // width
    words = np.dtype(f"<u{width}")
    zigzag = d[: n * width].view(words)
    value = out[: n * width].view(words)
    np.right_shift(zigzag, np.array(1, words), out=value)
    zigzag &= np.array(1, words)  # the sign bit, then all ones where it was set
    np.negative(zigzag, out=zigzag)
    value ^= zigzag
    value += b[: n * width].view(words)
    np.bitwise_xor(d[n * width :], b[n * width :], out=out[n * width :])
    return memoryview(out)


def _plain_candidates(
    view: memoryview, layout: tuple[int, int] | None, level: int
) -> list[tuple[Codec, bytes]]:
    """The compressed candidates for ``view`` (never RAW): FLOAT for floats, and ZSTD.

    For a large float chunk, plain zstd is tried only when a sample of it compresses better than
    FLOAT did (zero runs, tiled rows): on ordinary weights it never wins and is the slowest step.
    """
    out: list[tuple[Codec, bytes]] = []
    raw_len = len(view)
    limit = _SAMPLE_KEEP
    if layout is not None and raw_len >= layout[0]:
        payload = _encode_float(view, layout[0], layout[1])
        out.append((Codec.FLOAT, payload))
        limit = min(limit, len(payload) / raw_len)
    ratio = _sample_ratio(view, level)
    if ratio is None or ratio < limit * _SAMPLE_MARGIN:
        out.append((Codec.ZSTD, _compressor(level).compress(view)))
    return out


def _sample_ratio(view: memoryview, level: int | None) -> float | None:
    """How well zstd shrinks a sample of a large buffer; None for a buffer too small to sample."""
    n = len(view)
    if n < _SAMPLE_MIN:
        return None
    step = n // _SAMPLE_SLICES
    sample = b"".join(view[i * step : i * step + _SAMPLE_SLICE] for i in range(_SAMPLE_SLICES))
    return len(_compressor(level).compress(sample)) / len(sample)


def _encode_float(view: memoryview, itemsize: int, transform: int) -> bytes:
    """FLOAT payload: header, then each plane (zstd frame or raw), then the raw tail bytes.

    Every plane gets the plane coder and is kept raw when that does not shrink it (or a sample
    says it will not). Trailing bytes that do not fill an element are kept raw.
    """
    n, tail = divmod(len(view), itemsize)
    elems = np.frombuffer(view, dtype=f"<u{itemsize}", count=n)
    # Views of the "planes" scratch: used before this returns.
    planes = _split_planes(elems, itemsize, rotate=transform == _TRANSFORM_ROTATE)
    flags = 0
    lengths: list[int] = []
    parts: list[bytes | memoryview] = []
    for k in range(itemsize):
        plane = memoryview(planes[k])
        ratio = _sample_ratio(plane, None)
        packed = None
        if ratio is None or ratio < _SAMPLE_KEEP:
            packed = _compressor(None).compress(plane)
        if packed is not None and len(packed) < n:
            flags |= 1 << k
            parts.append(packed)
            lengths.append(len(packed))
        else:
            parts.append(plane)
            lengths.append(n)
    head = _FLOAT_HEAD.pack(_FLOAT_VERSION, transform, itemsize, flags)
    head += struct.pack(f"<{itemsize}I", *lengths)
    return b"".join([head, *parts, view[n * itemsize :]]) if tail else b"".join([head, *parts])


def _split_planes(elems: np.ndarray, itemsize: int, *, rotate: bool) -> list[np.ndarray]:
    """Plane k = byte k (little-endian) of every element, each plane contiguous.

    With ``rotate``, of every element rotated left by one bit. For words of up to 4 bytes the
    rotation is folded into the split: byte k of the rotated word is bits 8k-1 … 8k+6 of the
    word, so each plane is one shift and one narrowing copy, and only plane 0 takes one more
    pass for the top bit. A 4 MiB piece splits in 1.19 ms instead of 1.46 (F32), 0.91 instead
    of 0.98 (BF16). The planes live in this thread's "planes" scratch buffer: valid until the
    next call.
    """
    n = len(elems)
    out = _scratch("planes", n * itemsize)
    planes = [out[k * n : (k + 1) * n] for k in range(itemsize)]
    if itemsize > 4:
        words = _rotate_left(elems, itemsize) if rotate else elems
        grid = words.view(np.uint8).reshape(-1, itemsize)
        for k, plane in enumerate(planes):
            plane[:] = grid[:, k]
        return planes
    # Shifting whole words is ~2x faster than strided byte copies.
    shifted = _scratch("shifted", n * itemsize).view(elems.dtype)
    for k, plane in enumerate(planes):
        bits = 8 * k - 1 if rotate else 8 * k
        if bits == 0:
            np.copyto(plane, elems, casting="unsafe")
            continue
        if bits < 0:
            np.left_shift(elems, np.array(1, dtype=elems.dtype), out=shifted)
        else:
            np.right_shift(elems, np.array(bits, dtype=elems.dtype), out=shifted)
        np.copyto(plane, shifted, casting="unsafe")
    if rotate:  # the top bit wraps around to the bottom of plane 0
        np.right_shift(elems, np.array(itemsize * 8 - 1, dtype=elems.dtype), out=shifted)
        top = _scratch("top", n)
        np.copyto(top, shifted, casting="unsafe")
        planes[0] |= top
    return planes


def _join_planes(planes: list[np.ndarray], itemsize: int, words: np.ndarray) -> None:
    """Inverse of ``_split_planes``: fill ``words`` (little-endian) from their byte planes."""
    if itemsize <= 4:
        np.copyto(words, planes[-1])
        for plane in reversed(planes[:-1]):
            words <<= np.array(8, dtype=words.dtype)
            words |= plane
        return
    grid = words.view(np.uint8).reshape(-1, itemsize)
    for k, plane in enumerate(planes):
        grid[:, k] = plane


def _rotate_left(elems: np.ndarray, itemsize: int) -> np.ndarray:
    """Each element rotated left by one bit, in this thread's "rotated" scratch buffer."""
    bits = np.array(itemsize * 8 - 1, dtype=elems.dtype)
    out = _scratch("rotated", elems.nbytes).view(elems.dtype)
    low = _scratch("shifted", elems.nbytes).view(elems.dtype)
    np.left_shift(elems, np.array(1, dtype=elems.dtype), out=out)
    np.right_shift(elems, bits, out=low)
    out |= low
    return out


def _rotate_right_inplace(elems: np.ndarray, itemsize: int) -> None:
    low = _scratch("shifted", elems.nbytes).view(elems.dtype)
    np.right_shift(elems, np.array(1, dtype=elems.dtype), out=low)
    elems <<= np.array(itemsize * 8 - 1, dtype=elems.dtype)
    elems |= low


# ---------------------------------------------------------------------------------------------
# decode


def decode(
    codec: int,
    payload: bytes | memoryview,
    raw_len: int,
    *,
    base: bytes | memoryview | None = None,
    out: np.ndarray | None = None,
) -> Buffer:
    """Decode one chunk's payload back to its ``raw_len`` raw bytes (bytes or a byte view).

    The float and delta decoders fill one buffer and hand back a view of it: a copy into a
    ``bytes`` would cost a third of their time (fresh pages for every 4 MiB piece). ``out`` (a
    uint8 array of ``raw_len``) is that buffer when the caller has one to reuse — a delta source
    read only to encode against, see :func:`scratch` — else a new one is allocated. A RAW payload
    is returned as a view of itself either way.

    Everything is checked against ``raw_len`` before anything is allocated, so a corrupt pack or
    index row is an ``IntegrityError`` naming what is wrong, never zstd's exception type and never
    a huge allocation. Bytes that decode but differ are left to the store's hash check.
    """
    if not isinstance(raw_len, int) or raw_len < 0:
        raise IntegrityError(f"chunk raw length {raw_len!r} is not a byte count")
    view = memoryview(payload).cast("B")
    try:
        kind = Codec(codec)
    except ValueError:
        raise IntegrityError(f"unknown chunk codec {codec!r}") from None
    if kind == Codec.RAW:
        if len(view) != raw_len:
            raise IntegrityError(f"RAW chunk holds {len(view)} bytes, index says {raw_len}")
        return view
    if out is not None and (out.dtype != np.uint8 or out.shape != (raw_len,)):
        raise ValueError(f"decode: out must be a uint8 array of {raw_len} bytes")
    if kind == Codec.ZSTD:
        return _unzstd(view, raw_len, "ZSTD chunk", out)
    if kind == Codec.FLOAT:
        return _decode_float(view, raw_len, out)
    return _decode_delta(view, raw_len, base, out)


def scratch(slot: str, nbytes: int) -> np.ndarray:
    """A byte buffer of this thread's, reused by its next call for the same ``slot``.

    For decoded bytes that are consumed at once and never handed on: the chunk store decodes a
    delta source into one (a fresh 4 MiB buffer per piece costs its page faults again, which made
    decoding the sources a third slower). Slots used by the codecs themselves are taken; callers
    name their own.
    """
    return _scratch("user:" + slot, nbytes)


def _unzstd(frame: memoryview, expected: int, what: str, out: np.ndarray | None = None) -> Buffer:
    """Decompress one zstd frame that must hold exactly ``expected`` bytes (into ``out``).

    The declared size is checked before anything is allocated, and zstd refuses a frame that
    holds more than it declares, so the output never grows past ``expected``.
    """
    try:
        declared = zstandard.get_frame_parameters(frame).content_size
        if declared != expected:
            raise IntegrityError(
                f"{what}: zstd frame declares {declared} bytes, expected {expected}"
            )
        if out is None:
            got: Buffer = _decompressor().decompress(frame, max_output_size=max(expected, 1))
            n = len(got)
        else:
            # zstd refuses a frame that holds more than it declares ("buffer too small").
            reader = _decompressor().stream_reader(frame, read_across_frames=False)
            n = reader.readinto(out) if expected else 0
            got = memoryview(out)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{what}: corrupt zstd frame ({exc})") from None
    if n != expected:
        raise IntegrityError(f"{what}: decoded {n} bytes, expected {expected}")
    return got


def _decode_float(view: memoryview, raw_len: int, out: np.ndarray | None = None) -> memoryview:
    if len(view) < _FLOAT_HEAD.size:
        raise IntegrityError(
            f"FLOAT chunk: payload of {len(view)} bytes is shorter than its header"
        )
    version, transform, itemsize, flags = _FLOAT_HEAD.unpack_from(view)
    if version != _FLOAT_VERSION:
        raise IntegrityError(f"FLOAT chunk: unknown payload version {version}")
    if transform not in (_TRANSFORM_NONE, _TRANSFORM_ROTATE):
        raise IntegrityError(f"FLOAT chunk: unknown transform {transform}")
    if itemsize not in (2, 4, 8):
        raise IntegrityError(f"FLOAT chunk: unsupported element width {itemsize}")
    if flags >> itemsize:
        raise IntegrityError(f"FLOAT chunk: plane flags {flags:#x} name planes beyond {itemsize}")
    head_len = _FLOAT_HEAD.size + 4 * itemsize
    if len(view) < head_len:
        raise IntegrityError(
            f"FLOAT chunk: payload of {len(view)} bytes is shorter than its header"
        )
    lengths = struct.unpack_from(f"<{itemsize}I", view, _FLOAT_HEAD.size)
    n, tail = divmod(raw_len, itemsize)
    if head_len + sum(lengths) + tail != len(view):
        raise IntegrityError(
            f"FLOAT chunk: header accounts for {head_len + sum(lengths) + tail} bytes, "
            f"payload has {len(view)}"
        )
    planes: list[np.ndarray] = []
    pos = head_len
    # Decompressed planes live in this thread's "planes" scratch until they are joined.
    space = _scratch("planes", n * itemsize)
    for k, length in enumerate(lengths):
        part = view[pos : pos + length]
        pos += length
        if flags >> k & 1:
            plane = space[k * n : (k + 1) * n]
            _unzstd(part, n, f"FLOAT chunk plane {k}", plane)
        elif length != n:
            raise IntegrityError(f"FLOAT chunk: raw plane {k} holds {length} bytes, expected {n}")
        else:
            plane = np.frombuffer(part, dtype=np.uint8)
        planes.append(plane)
    if out is None:
        out = np.empty(raw_len, np.uint8)
    words = out[: n * itemsize].view(f"<u{itemsize}")
    _join_planes(planes, itemsize, words)
    if transform == _TRANSFORM_ROTATE:
        _rotate_right_inplace(words, itemsize)
    if tail:
        out[n * itemsize :] = np.frombuffer(view[pos:], np.uint8)
    return memoryview(out)


def _decode_delta(
    view: memoryview, raw_len: int, base: Buffer | None, out: np.ndarray | None = None
) -> memoryview:
    if base is None:
        raise IntegrityError("DELTA chunk: its base chunk was not given")
    bview = memoryview(base).cast("B")
    if len(bview) != raw_len:
        raise IntegrityError(f"DELTA chunk: base holds {len(bview)} bytes, expected {raw_len}")
    if len(view) < _DELTA_HEAD.size:
        raise IntegrityError(
            f"DELTA chunk: payload of {len(view)} bytes is shorter than its header"
        )
    version, op, width, inner = _DELTA_HEAD.unpack_from(view)
    if version != _DELTA_VERSION:
        raise IntegrityError(f"DELTA chunk: unknown payload version {version}")
    if (op, width) != (_OP_XOR, 1) and (op != _OP_SUB or width not in (2, 4, 8)):
        raise IntegrityError(f"DELTA chunk: unknown delta operation {op} on {width}-byte words")
    body = view[_DELTA_HEAD.size :]
    delta = _scratch("delta", raw_len)  # consumed by _delta_inverse below
    if inner == Codec.ZSTD:
        _unzstd(body, raw_len, "DELTA chunk", delta)
    elif inner == Codec.FLOAT:
        _decode_float(body, raw_len, delta)
    else:
        raise IntegrityError(f"DELTA chunk: unknown inner codec {inner}")
    return _delta_inverse(delta, bview, op, width, out)
