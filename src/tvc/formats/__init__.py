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
from tvc.formats.pickle_scan import refusal, scan_pickle, scan_pickle_file
from tvc.formats.safetensors import parse_safetensors
from tvc.formats.torchzip import parse_torch_zip, torch_pickle_member

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

#: Extensions torch checkpoints use, zip or legacy pickle.
TORCH_EXTENSIONS = frozenset({".pt", ".pth", ".bin", ".ckpt"})
#: Extensions that say "this is a pickle", whatever the first byte.
PICKLE_EXTENSIONS = frozenset({".pkl", ".pickle", ".joblib"})
_ZIP_MAGIC = b"PK\x03\x04"
_GGUF_MAGIC = b"GGUF"
_PICKLE_PROTO = 0x80


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
    GGUF; a zip with a ``<prefix>/data.pkl`` member is a torch archive; a pickle (a
    ``.pkl``/``.pickle``/``.joblib`` file, or a torch extension starting with a protocol-2+
    marker) is scanned and stored opaque; anything else is opaque. A file that claims a
    format and breaks it raises ``FormatError``; an unsafe pickle raises
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
            head = f.read(8)
    except OSError as e:
        raise PathError(f"{name}: {e.strerror or 'cannot be read'}") from None

    if ext == ".safetensors":
        return parse_safetensors(name)
    if ext == ".gguf" or head[:4] == _GGUF_MAGIC:
        from tvc.formats.gguf import parse_gguf  # the gguf package costs 35 ms to import

        return parse_gguf(name)
    if head[:4] == _ZIP_MAGIC:
        layout = _maybe_torch_zip(name, ext, allow_unsafe_pickle)
        if layout is not None:
            return layout
        return opaque_layout(size)
    if ext in PICKLE_EXTENSIONS or (
        ext in TORCH_EXTENSIONS and head[:1] == bytes([_PICKLE_PROTO]) and head[1:2] >= b"\x02"
    ):
        return _legacy_pickle(
            name, size, always=ext in PICKLE_EXTENSIONS, allow=allow_unsafe_pickle
        )
    return opaque_layout(size)


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
    with zf:
        if torch_pickle_member(zf) is None:
            return None
        return parse_torch_zip(name, zf, allow_unsafe_pickle=allow_unsafe_pickle)


def _legacy_pickle(name: str, size: int, *, always: bool, allow: bool) -> Layout:
    """Scan a raw pickle file; its bytes stay opaque."""
    with open(name, "rb") as f:
        unsafe, malformed = scan_pickle_file(f, always=always)
    layout = opaque_layout(size)
    layout.metadata["pickle"] = True
    if allow:
        if unsafe:
            layout.metadata["unsafe_imports"] = unsafe
        return layout
    if unsafe:
        raise UnsafePickleError(refusal(name, unsafe))
    if malformed:
        raise UnsafePickleError(
            f"{name}: pickle cannot be checked to the end ({malformed}); "
            "refusing it (--allow-unsafe-pickle overrides)"
        )
    return layout
