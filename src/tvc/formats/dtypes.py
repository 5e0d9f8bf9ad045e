"""Canonical tensor dtype names, shared by every parser.

A *dtype* here is a short upper-case string. Element types use the safetensors spelling
(``F32``, ``BF16``, ``F8_E4M3``, ``I64``, ``BOOL`` …); GGUF block-quantized types use their
``GGMLQuantizationType`` name (``Q4_K``, ``Q8_0`` …), which agrees with the safetensors spelling
for the plain types both formats share (F32 F16 BF16 F64 I8 I16 I32 I64). One vocabulary lets
the store pick a codec and the analysis layer compare tensors without knowing the file format.

*bits* is the width of one element. *itemsize* is the width in whole bytes of one element, or 0
when elements are not byte-sized (packed F4/F6, block-quantized GGUF types, unknown names): the
codecs use itemsize to group bytes, and 0 tells them not to.
"""

from __future__ import annotations

from tvc.store.lazy import lazy_module

np = lazy_module("numpy", globals(), "np")  # numpy loads on first use: cold starts skip it

# Element widths in bits, as safetensors 0.8 defines them, plus a few torch-only types.
_BITS: dict[str, int] = {
    "F64": 64,
    "F32": 32,
    "F16": 16,
    "BF16": 16,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "F4": 4,
    "C64": 64,
    "I64": 64,
    "I32": 32,
    "I16": 16,
    "I8": 8,
    "U64": 64,
    "U32": 32,
    "U16": 16,
    "U8": 8,
    "BOOL": 8,
    # torch-only: complex128, complex32, two F4 values packed per byte (torch counts bytes),
    # and the quantized storages (their raw element types).
    "C128": 128,
    "C32": 32,
    "F4_X2": 8,
    "QI8": 8,
    "QU8": 8,
    "QI32": 32,
    "QU4X2": 8,
    "QU2X4": 8,
}

#: dtypes a safetensors header may name (safetensors 0.8).
SAFETENSORS_DTYPES: frozenset[str] = frozenset(_BITS) - {
    "C128",
    "C32",
    "F4_X2",
    "QI8",
    "QU8",
    "QI32",
    "QU4X2",
    "QU2X4",
}

#: torch's legacy typed storage classes (``torch.<Name>``) and the dtype of their elements.
TORCH_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "F64",
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
    "BFloat16Storage": "BF16",
    "ComplexDoubleStorage": "C128",
    "ComplexFloatStorage": "C64",
    "QInt8Storage": "QI8",
    "QInt32Storage": "QI32",
    "QUInt8Storage": "QU8",
    "QUInt4x2Storage": "QU4X2",
    "QUInt2x4Storage": "QU2X4",
}
#: torch dtypes by attribute name (``torch.<name>``), as pickles name them; None where tvc has
#: no canonical name (the sub-byte int1…int7 and uint1…uint7), so such tensors stay untabled.
TORCH_DTYPES: dict[str, str | None] = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
    "complex32": "C32",
    "complex64": "C64",
    "complex128": "C128",
    "float8_e5m2": "F8_E5M2",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2fnuz": "F8_E5M2FNUZ",
    "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e8m0fnu": "F8_E8M0",
    "float4_e2m1fn_x2": "F4_X2",
    "bits8": "U8",
    "bits16": "U16",
    "bits1x8": "U8",
    "bits2x4": "U8",
    "bits4x2": "U8",
    "qint8": "QI8",
    "qint32": "QI32",
    "quint8": "QU8",
    "quint4x2": "QU4X2",
    "quint2x4": "QU2X4",
}
TORCH_DTYPES.update({f"{s}int{n}": None for s in ("", "u") for n in range(1, 8)})


_NUMPY: dict[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "C64": "<c8",
    "C128": "<c16",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}


def bits(dtype: str) -> int | None:
    """Bits per element of an element dtype; None for block-quantized or unknown names."""
    return _BITS.get(dtype)


def itemsize(dtype: str | None) -> int:
    """Bytes per element, or 0 when elements are not whole bytes or the name is unknown.

    Unknown names give 0 rather than an error because manifests written by a newer tvc may
    name dtypes this one has never heard of; 0 only means "do not group bytes".
    """
    if dtype is None:
        return 0
    b = _BITS.get(dtype)
    if b is None or b % 8:
        return 0
    return b // 8


def numpy_dtype(dtype: str) -> np.dtype | None:
    """The little-endian numpy dtype that reads this dtype's bytes, or None if numpy has none.

    BF16, the F8/F6/F4 variants and every GGUF quantized type give None: numpy has no such
    type, and a same-width integer view would silently change what the values mean. Callers
    that only move bytes can use ``np.dtype(f"u{itemsize(dtype)}")`` themselves.
    """
    name = _NUMPY.get(dtype)
    return None if name is None else np.dtype(name)
