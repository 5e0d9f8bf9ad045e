"""The formats layer: what a model file's bytes mean, and where to cut them.

``parse_file`` recognizes a file by its extension and its first bytes and returns its *layout*
(tensor segments and opaque segments that tile the file; see ``layout``). ``iter_chunks`` cuts
a file along that layout into *chunk specs* for the store. Pickle-based files are scanned on
the way in, and refused when they would import anything beyond tensors and plain data.

This layer reads files; it never writes, and it imports nothing from the store, repo or CLI.
"""

from __future__ import annotations

import os
import stat
import zipfile

from tvc.errors import FormatError, PathError, TvcError, UnsafePickleError
from tvc.formats.chunking import PIECE_SIZE, ChunkSpec, iter_chunks
from tvc.formats.dtypes import itemsize, numpy_dtype
from tvc.formats.layout import Layout, Segment, TensorInfo, brief
from tvc.formats.pickle_files import (
    PICKLE_EXTENSIONS,
    TORCH_EXTENSIONS,
    ZIP_MAGIC,
    Findings,
    find_pickles,
    may_hold_pickles,
    scan_zip,
)
from tvc.formats.pickle_scan import refusal, scan_pickle
from tvc.formats.safetensors import parse_safetensors

__all__ = [
    "PIECE_SIZE",
    "ChunkSpec",
    "Layout",
    "Segment",
    "TensorInfo",
    "itemsize",
    "iter_chunks",
    "numpy_dtype",
    "opaque_layout",
    "parse_file",
    "scan_pickle",
]

_GGUF_MAGIC = b"GGUF"


def opaque_layout(size: int) -> Layout:
    """A file we do not interpret: one opaque segment (the chunker cuts it by content)."""
    layout = Layout("opaque", size, [Segment(0, size)] if size else [])
    layout.check()
    return layout


def parse_file(
    path: str | os.PathLike[str], *, parse: bool = True, allow_unsafe_pickle: bool = False
) -> Layout:
    """The layout of the file at ``path``.

    With ``parse=False`` every file is opaque (the CLI's ``--no-parse``). Otherwise:
    ``*.safetensors`` must be valid safetensors; ``*.gguf`` or a ``GGUF`` magic must be valid
    GGUF; a zip with a ``<prefix>/data.pkl`` member is a torch archive; a legacy ``torch.save``
    file is cut at its storage records; anything else is opaque. Every pickle in any file —
    found by content, whatever the extension: see ``pickle_files`` — is scanned. A file that
    claims a format and breaks it raises ``FormatError``; an unsafe pickle raises
    ``UnsafePickleError`` unless ``allow_unsafe_pickle``.
    """
    name = os.fspath(path)
    try:
        return _parse(name, parse, allow_unsafe_pickle)
    except TvcError:
        raise
    except Exception as e:
        # Each parser turns every problem it can foresee into a FormatError; this net keeps
        # the promise (a hostile file is a FormatError) for anything it could not.
        raise FormatError(f"{name}: cannot be parsed ({type(e).__name__}: {brief(str(e))})") from e


def _parse(name: str, parse: bool, allow_unsafe_pickle: bool) -> Layout:
    try:
        st = os.stat(name)
    except OSError as e:
        raise PathError(f"{name}: {e.strerror or 'cannot be read'}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PathError(f"{name}: not a regular file")
    size = st.st_size
    if not parse:
        return opaque_layout(size)

    ext = os.path.splitext(name)[1].lower()
    try:
        with open(name, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise PathError(f"{name}: {e.strerror or 'cannot be read'}") from None

    if ext == ".safetensors":
        return parse_safetensors(name)
    if ext == ".gguf" or head[:4] == _GGUF_MAGIC:
        from tvc.formats.gguf import parse_gguf  # the gguf package costs 35 ms to import

        return parse_gguf(name)
    if head[:4] == ZIP_MAGIC:
        layout = _maybe_torch_zip(name, ext, allow_unsafe_pickle)
        if layout is not None:
            return layout
    if not may_hold_pickles(head) and ext not in PICKLE_EXTENSIONS:
        return opaque_layout(size)
    return _sniffed(name, size, ext, allow_unsafe_pickle)


def _maybe_torch_zip(name: str, ext: str, allow_unsafe_pickle: bool) -> Layout | None:
    """A torch archive's layout, or None for a zip that is not one (an .npz, say)."""
    try:
        zf = zipfile.ZipFile(name)
    except Exception as e:  # zipfile raises a zoo of types on hostile input
        if ext in TORCH_EXTENSIONS:
            raise FormatError(
                f"{name}: not a valid torch checkpoint: bad zip ({brief(str(e))})"
            ) from None
        return None
    from tvc.formats.torchzip import parse_torch_zip, torch_pickle_member

    with zf:
        member = torch_pickle_member(zf)
        if member is None:
            return None
        layout = parse_torch_zip(name, zf, allow_unsafe_pickle=allow_unsafe_pickle)
        # parse_torch_zip scanned the pickles torch loads; scan every other member too.
        prefix = member[: -len("data.pkl")]
        data = prefix + "data/"  # the storage records: raw tensor bytes
        findings = Findings()
        scan_zip(
            zf,
            findings,
            skip=lambda n: n.startswith(prefix) and (n.endswith(".pkl") or n.startswith(data)),
        )
    return _judged(name, findings, allow_unsafe_pickle, layout)


def _sniffed(name: str, size: int, ext: str, allow: bool) -> Layout:
    """Any file not parsed above: every pickle in it scanned, a legacy torch file cut up.
    (``torchzip`` loads for a file that is one: 2-3 ms of every small commit otherwise.)"""

    def storage_sizes(obj: bytes) -> dict[str, tuple[int, int]]:
        from tvc.formats.torchzip import legacy_storage_sizes

        return legacy_storage_sizes(obj)

    with open(name, "rb") as f:
        findings, legacy = find_pickles(name, f, size, ext, storage_sizes=storage_sizes)
        if isinstance(legacy, str):
            raise FormatError(f"{name}: not a valid legacy torch checkpoint: {legacy}")
        layout = None
        if legacy is not None and legacy.records and not findings.unsafe:
            f.seek(legacy.object_pickle[0])
            obj = f.read(legacy.object_pickle[1] - legacy.object_pickle[0])
            from tvc.formats.torchzip import parse_torch_legacy

            layout = parse_torch_legacy(name, obj, legacy.records, size)
    return _judged(name, findings, allow, layout or opaque_layout(size))


def _judged(name: str, findings: Findings, allow: bool, layout: Layout) -> Layout:
    """Refuse a file whose pickles are unsafe or unreadable, unless ``allow``."""
    if not allow:
        if findings.unsafe:
            raise UnsafePickleError(refusal(name, findings.unsafe))
        if findings.problems:
            raise UnsafePickleError(
                f"{name}: pickle cannot be checked to the end ({brief(findings.problems[0])}); "
                "refusing it (--allow-unsafe-pickle overrides)"
            )
    if findings.pickles:
        layout.metadata["pickle"] = True
    if findings.unsafe:
        layout.metadata["unsafe_imports"] = findings.unsafe
    return layout
