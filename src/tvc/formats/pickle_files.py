"""Where pickles hide in a file, so that every one of them is scanned.

Loaders run pickles from many places, whatever a file's name says: ``pickle.load`` any file
(protocols 0–5: only protocol 2+ starts with a marker byte); ``torch.load`` a legacy file (five
pickles back to back — magic number, protocol, system info, the object, the storage keys —
then raw storage records), a zip archive (``data.pkl`` and friends) or an old tar archive;
``numpy.load`` a ``.npy`` object array (a pickle after the header) or a ``.npz`` (a zip of
them); ``joblib.load`` a pickle, possibly compressed with zlib, gzip, bz2, xz or lzma, whose
arrays are raw bytes between its opcodes.

``find_pickles`` looks for all of them *by content* and scans each with ``pickle_scan``: a file
whose name claims a pickle is scanned strictly (it must read to the end), any other file
leniently (it is a pickle only if it reads as one, or calls something before breaking off). A
legacy torch file is walked record by record, so its raw storage bytes are skipped, never
mistaken for a pickle, and bytes after them are sniffed again.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from tvc.formats.layout import brief
from tvc.formats.pickle_scan import PickleScan, scan_stream

#: Extensions that say "this is a pickle", whatever the first byte.
PICKLE_EXTENSIONS = frozenset({".pkl", ".pickle", ".joblib"})
#: Extensions torch checkpoints use, zip or legacy pickle.
TORCH_EXTENSIONS = frozenset({".pt", ".pth", ".bin", ".ckpt"})
TORCH_MAGIC = 0x1950A86A20F9469CFC6C
TORCH_PROTOCOL = 1001
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
#: The small legacy-torch pickles (magic, protocol, keys) are loaded to learn their values;
#: anything bigger than this is not what torch writes.
MAX_SMALL_PICKLE = 1 << 26
_OPCODE_BYTES = frozenset(op.code.encode("latin-1") for op in pickletools.opcodes)
#: The largest .npy header tvc reads (numpy's own limit, lifted by allow_pickle, is 10,000).
MAX_NPY_HEADER = 1 << 26
#: Member names torch's old tar format unpickles.
_TORCH_TAR_MEMBERS = frozenset({"sys_info", "pickle", "storages", "tensors"})


@dataclass
class Findings:
    """Every pickle found in one file: what they import, and what could not be checked."""

    unsafe: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # strict pickles not readable to the end
    pickles: int = 0

    def add(self, where: str, scan: PickleScan, *, strict: bool) -> bool:
        """Record one stream's scan; False if the stream was no pickle at all."""
        # A pickle that broke off counts if it used something unsafe first, or if the file
        # says it is a pickle; otherwise it is just bytes that happen to start like one.
        partial_counts = scan.called_unsafe or (strict and not scan.pickles)
        if not scan.pickles and not partial_counts:
            return False
        if not strict and not partial_counts and _only_noise(scan):
            # Bytes that read as a pickle returning an unused copyreg extension code (no code
            # is registered unless a program registers one, so loading fails), or storing into
            # a memo slot billions in (loading runs out of memory: nothing is imported or
            # called). Random data reads this way about once in 12,000 files, and once in
            # 830,000 (1 KB files) as such a "memory bomb" — a 9-byte pickle like
            # `M <int> r <index> .`. In a file whose name does not say pickle: not a pickle.
            return False
        self.pickles += scan.pickles + (1 if scan.malformed and partial_counts else 0)
        names = scan.unsafe + (scan.partial_unsafe if partial_counts else [])
        for name in names:
            shown = f"{where}:{name}" if where else name
            if shown not in self.unsafe:
                self.unsafe.append(shown)
        if scan.malformed and partial_counts and strict:
            self.problems.append(f"{where or 'pickle'}: {scan.malformed}")
        return True


def _only_noise(scan: PickleScan) -> bool:
    return (
        bool(scan.unsafe)
        and not scan.used_unsafe
        and all(name.startswith(("<extension code", "<memo index")) for name in scan.unsafe)
    )


@dataclass
class LegacyTorch:
    """A legacy ``torch.save`` file: where its pickles end and its storage records lie."""

    object_pickle: tuple[int, int]  # byte range of the pickle of the saved object
    records: dict[str, tuple[int, int]]  # storage key -> (data offset, length)
    end: int  # where the last record ends


def may_hold_pickles(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first 512 bytes) could hold a pickle at all.

    A pickle starts with an opcode; containers start with their magic (a tar's is at byte 257).
    Most other files — JSON, text, vocabularies — fail this test on their first byte, which
    spares them the scan.
    """
    return bool(head) and (
        head[:1] in _OPCODE_BYTES
        or head.startswith((ZIP_MAGIC, NPY_MAGIC))
        or _decompressor(head) is not None
        or head[257:262] == b"ustar"
    )


def find_pickles(
    path: str, f: BinaryIO, size: int, ext: str, *, storage_sizes: Callable | None = None
) -> tuple[Findings, LegacyTorch | str | None]:
    """Scan every pickle of the file open as ``f`` (the file at ``path``, ``size`` bytes).

    Returns the findings and, for a legacy torch file, its ``LegacyTorch`` record map (or a
    string saying why its structure is broken). ``storage_sizes(object_pickle_bytes)`` maps a
    legacy file's storage keys to their element sizes; without it, records are not walked.
    """
    findings = Findings()
    head = f.read(512)
    f.seek(0)
    # Only a name that says "pickle" makes a scan strict: a torch extension does not (.bin is
    # also raw data, 1 in 256 of which starts with the PROTO byte), and the lenient scan is
    # safe for any file, as the scanner never reads more strictly than the C unpickler.
    strict = ext in PICKLE_EXTENSIONS
    if head.startswith(ZIP_MAGIC):
        try:
            zf = zipfile.ZipFile(f)
        except Exception:  # torch and numpy would fail to open it too
            return findings, None
        with zf:
            scan_zip(zf, findings)
        return findings, None
    if head.startswith(NPY_MAGIC):
        _scan_npy(f, "", findings)
        return findings, None
    opener = _decompressor(head)
    if opener is not None:
        try:
            with opener(f) as inner:
                findings.add("", scan_stream(inner, rewind=False), strict=strict)
        except Exception:
            pass  # not really compressed data: a loader could not decompress it either
        return findings, None
    if len(head) >= 262 and head[257:262] == b"ustar":
        _scan_tar(f, findings)
        return findings, None
    scan = scan_stream(f)
    if scan.values[:1] == [TORCH_MAGIC]:  # legacy torch.save: read again, record by record
        f.seek(0)
        return findings, _scan_legacy_torch(f, size, findings, storage_sizes)
    findings.add("", scan, strict=strict)
    return findings, None


def scan_zip(
    zf: zipfile.ZipFile, findings: Findings, skip: Callable[[str], bool] | None = None
) -> None:
    """Scan every member of a zip that could be a pickle (``skip`` names members not to read)."""
    for info in zf.infolist():
        if info.is_dir() or (skip is not None and skip(info.filename)):
            continue
        ext = os.path.splitext(info.filename)[1].lower()
        try:
            with zf.open(info) as m:
                head = m.peek(8)[:8]
                if head.startswith(NPY_MAGIC):
                    _scan_npy(m, info.filename, findings)
                    continue
                strict = ext in PICKLE_EXTENSIONS
                findings.add(info.filename, scan_stream(m, rewind=False), strict=strict)
        except Exception as e:  # encrypted, unknown compression, bad CRC
            if ext in PICKLE_EXTENSIONS:
                findings.problems.append(f"{info.filename}: cannot be read ({brief(str(e))})")


def _scan_npy(f: BinaryIO, where: str, findings: Findings) -> None:
    """An object array's pickle, after the header, is what ``np.load(allow_pickle=True)`` runs.

    The header is read by numpy's own reader, with the limit ``allow_pickle=True`` uses (none:
    we allow MAX_NPY_HEADER), so a header numpy would accept is never one tvc skips.
    """
    import numpy.lib.format as npf

    try:
        from numpy.lib._format_impl import _read_array_header  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.lib.format import _read_array_header  # type: ignore[attr-defined,no-redef]

    try:
        version = npf.read_magic(f)
    except Exception:
        return  # numpy could not read it either: nothing of it would run
    start = f.tell()
    width = 2 if version == (1, 0) else 4
    length = int.from_bytes(f.read(width), "little")
    if length > MAX_NPY_HEADER:
        findings.problems.append(f"{where or 'npy'}: a {length}-byte header, too large to check")
        return
    f.seek(start)
    try:
        _shape, _order, dtype = _read_array_header(f, version, max_header_size=MAX_NPY_HEADER)
    except Exception:
        return
    if dtype.hasobject:
        findings.add(where or "npy", scan_stream(f, rewind=False), strict=True)


def _decompressor(head: bytes) -> Callable[[BinaryIO], BinaryIO] | None:
    """How joblib would decompress a file starting with ``head``, or None. (The modules load
    when a file needs them: together with tarfile's, 3 ms of every small commit.)"""
    if head.startswith(b"\x1f\x8b"):
        import gzip

        return lambda f: gzip.GzipFile(fileobj=f, mode="rb")
    if head.startswith(b"BZh"):
        import bz2

        return lambda f: bz2.BZ2File(f, "rb")
    if head.startswith((b"\xfd7zXZ\x00", b"\x5d\x00\x00")):
        import lzma

        return lambda f: lzma.LZMAFile(f, "rb")
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        return lambda f: io.BufferedReader(_ZlibReader(f))
    return None


class _ZlibReader(io.RawIOBase):
    """A zlib stream as a readable file (what joblib's zlib compressor writes)."""

    def __init__(self, f: BinaryIO):
        self.f, self.z, self.pos = f, zlib.decompressobj(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        out = b""
        while not out:
            if self.z.eof:
                return 0
            raw = self.z.unconsumed_tail or self.f.read(1 << 16)
            if not raw:
                return 0
            out = self.z.decompress(raw, len(b))
        b[: len(out)] = out
        self.pos += len(out)
        return len(out)

    def tell(self) -> int:
        return self.pos


def _scan_tar(f: BinaryIO, findings: Findings) -> None:
    import tarfile

    try:
        tf = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 (closed by the with below)
    except Exception:
        return
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError):
            return  # tarfile (and so torch) cannot list it: nothing in it would be loaded
        if {"pickle", "storages"} <= {m.name for m in members}:
            # torch's first format: its "storages" member interleaves pickles with raw bytes
            findings.problems.append("a torch tar archive (torch < 0.4), which tvc cannot check")
        for info in members:
            if not info.isfile():
                continue
            strict = info.name in _TORCH_TAR_MEMBERS or (
                os.path.splitext(info.name)[1].lower() in PICKLE_EXTENSIONS
            )
            try:
                m = tf.extractfile(info)
                if m is None:
                    continue
                with m:
                    findings.add(info.name, scan_stream(m, rewind=False), strict=strict)
            except (tarfile.TarError, OSError, EOFError) as e:
                if strict:
                    findings.problems.append(f"{info.name}: cannot be read ({brief(str(e))})")


class _NoGlobals(pickle.Unpickler):
    """Loads plain data only: the legacy header pickles hold numbers, strings and lists."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} in a legacy torch header pickle")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("a persistent id in a legacy torch header pickle")


def _load_small(f: BinaryIO, start: int, end: int) -> Any:
    if end - start > MAX_SMALL_PICKLE:
        raise ValueError(f"a header pickle of {end - start} bytes")
    f.seek(start)
    return _NoGlobals(io.BytesIO(f.read(end - start))).load()


def _scan_legacy_torch(
    f: BinaryIO, size: int, findings: Findings, storage_sizes: Callable | None
) -> LegacyTorch | str:
    """Scan the five pickles of a legacy torch file, then walk its storage records."""
    bounds: list[tuple[int, int]] = []
    what = ("magic number", "protocol version", "system info", "object", "storage keys")
    for i in range(5):
        start = f.tell()
        scan = scan_stream(f, max_pickles=1)
        findings.add(what[i], scan, strict=True)
        if scan.malformed:
            return f"its {what[i]} pickle cannot be read"
        bounds.append((start, scan.end))
        if i == 1 and scan.values != [TORCH_PROTOCOL]:
            return f"protocol version {brief(scan.values)} is not {TORCH_PROTOCOL}"
    if findings.unsafe or storage_sizes is None:
        return LegacyTorch(bounds[3], {}, bounds[4][1])
    try:
        keys = _load_small(f, *bounds[4])
    except Exception as e:
        return f"its storage keys cannot be read ({brief(str(e))})"
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return "its storage keys are not a list of strings"
    f.seek(bounds[3][0])
    try:  # key -> (numel, itemsize)
        sizes = storage_sizes(f.read(bounds[3][1] - bounds[3][0]))
    except Exception as e:
        return f"its object pickle cannot be understood ({brief(str(e))})"
    records: dict[str, tuple[int, int]] = {}
    pos = bounds[4][1]
    for key in keys:
        if key not in sizes or key in records:
            return f"storage key {brief(key)} is unknown or repeated"
        numel, itemsize = sizes[key]
        f.seek(pos)
        raw = f.read(8)
        if len(raw) != 8:
            return f"storage {brief(key)} is cut short"
        count = int.from_bytes(raw, "little", signed=True)
        if count != numel:
            return f"storage {brief(key)} holds {count} elements, the pickle says {numel}"
        length = count * itemsize
        if pos + 8 + length > size:
            return f"storage {brief(key)} runs past the end of the file"
        records[key] = (pos + 8, length)
        pos += 8 + length
    if pos < size:  # torch never reads these bytes, but another loader might
        f.seek(pos)
        findings.add("trailing bytes", scan_stream(f, rewind=False), strict=False)
    return LegacyTorch(bounds[3], records, pos)
