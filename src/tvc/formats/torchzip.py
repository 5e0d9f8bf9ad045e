"""The parser for PyTorch zip checkpoints (``torch.save`` since PyTorch 1.6).

A torch zip *archive* holds, under one *prefix* directory, a pickle ``data.pkl`` describing the
saved object, and one *storage record* ``data/<key>`` per storage: the raw bytes of the tensors
that view it, stored uncompressed. The pickle names each storage by a *persistent id*
``("storage", <storage type>, key, location, numel)`` and rebuilds each tensor from
(storage, storage offset, size, stride).

We read ``data.pkl`` with a restricted unpickler whose ``find_class`` hands back inert stand-ins
— nothing from torch or anywhere else is imported or called — after ``pickle_scan`` has checked
what the pickle would import. Storage records become tensor segments (cut at the record, so a
tensor's pieces line up across versions); local headers, the pickle and the central directory
are opaque. The tensor table lists every contiguous tensor of the (possibly nested) saved dicts
and lists, named by its dotted key path.
"""

from __future__ import annotations

import io
import itertools
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tvc.errors import FormatError, UnsafePickleError
from tvc.formats import dtypes
from tvc.formats.layout import Layout, Segment, TensorInfo, brief, tile
from tvc.formats.pickle_scan import ALLOWED_GLOBALS, refusal, scan_pickle

#: A data.pkl larger than this is not a checkpoint's pickle but an attack or a mistake.
MAX_PICKLE = 1 << 30
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_MAGIC = b"PK\x03\x04"
#: Keys nest at most this deep in the tensor table, which holds at most MAX_TENSORS entries.
MAX_DEPTH = 64
MAX_TENSORS = 1_000_000


def torch_pickle_member(zf: zipfile.ZipFile) -> str | None:
    """The ``<prefix>/data.pkl`` member that makes a zip a torch archive, or None."""
    candidates = [n for n in zf.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
    if not candidates:
        return None
    first = zf.namelist()[0].split("/", 1)[0]
    return next((c for c in candidates if c.startswith(first + "/")), candidates[0])


def parse_torch_zip(
    path: str | os.PathLike[str], zf: zipfile.ZipFile, *, allow_unsafe_pickle: bool = False
) -> Layout:
    """Describe a torch zip archive, or raise ``FormatError`` naming the file and the problem.

    Raises ``UnsafePickleError`` if a pickle in the archive imports anything outside
    ``pickle_scan.ALLOWED_GLOBALS`` and ``allow_unsafe_pickle`` is false.
    """

    def fail(problem: str) -> FormatError:
        return FormatError(f"{os.fspath(path)}: not a valid torch checkpoint: {problem}")

    pkl_name = torch_pickle_member(zf)
    if pkl_name is None:
        raise fail("no <prefix>/data.pkl in the archive")
    prefix = pkl_name[: -len("data.pkl")]
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        members = _member_ranges(f, zf, size, fail)

    unsafe: list[str] = []
    pickles: dict[str, bytes] = {}
    for info in zf.infolist():
        if info.filename.startswith(prefix) and info.filename.endswith(".pkl"):
            pickles[info.filename] = _read_member(zf, info, fail)
            try:
                found = scan_pickle(pickles[info.filename])
            except FormatError as e:
                raise fail(f"{brief(info.filename)}: {e}") from None
            unsafe += [g for g in found if g not in unsafe]
    scripted = [g for g in unsafe if _scripted_class(zf, prefix, g)]
    unsafe = [g for g in unsafe if g not in scripted]
    if unsafe and not allow_unsafe_pickle:
        raise UnsafePickleError(refusal(os.fspath(path), unsafe))

    loader = _Loader(pickles[pkl_name], allow_unsafe=bool(unsafe or scripted))
    understood = True
    try:
        root = loader.load()
        named = _walk(root)
    except Exception as e:
        if not unsafe:
            raise fail(f"{pkl_name} cannot be understood: {brief(str(e))}") from None
        understood, named = False, []

    tensors, segments_by_key, noncontiguous = _tables(prefix, members, loader.storages, named, fail)
    metadata: dict[str, Any] = {"storages": len(segments_by_key)}
    if noncontiguous:
        metadata["noncontiguous"] = noncontiguous
    if not understood:
        metadata["pickle_understood"] = False
    if unsafe:
        metadata["unsafe_imports"] = unsafe
    byteorder = zf.NameToInfo.get(prefix + "byteorder")
    if byteorder is not None and byteorder.file_size <= 16:
        order = _read_member(zf, byteorder, fail).decode("ascii", "replace")
        if order != "little":
            metadata["byteorder"] = order
    segments = tile(size, list(segments_by_key.values()), lambda p: fail(f"storages {p}"))
    layout = Layout("torch", size, segments, tensors, metadata)
    layout.check()
    return layout


def _scripted_class(zf: zipfile.ZipFile, prefix: str, name: str) -> bool:
    """Whether ``name`` is a class of a TorchScript archive: ``__torch__.a.b.C`` whose
    TorchScript source ``<prefix>code/__torch__/a/b.py`` the archive holds.

    Such a global names no Python module (there is no ``__torch__`` to import, so an ordinary
    unpickler fails on it); ``torch.jit.load`` builds the class from that source, in the
    TorchScript interpreter, which runs no Python. So it is not an import that loading the
    file would execute, and TorchScript models commit without ``--allow-unsafe-pickle``."""
    if not name.startswith("__torch__.") or not zf.NameToInfo.get(prefix + "constants.pkl"):
        return False
    module = name.rpartition(".")[0]
    return prefix + "code/" + module.replace(".", "/") + ".py" in zf.NameToInfo


@dataclass
class _Member:
    info: zipfile.ZipInfo
    data_offset: int


def _member_ranges(
    f: io.BufferedReader, zf: zipfile.ZipFile, size: int, fail: Callable[[str], FormatError]
) -> dict[str, _Member]:
    """Where each member's bytes start, from its local header; members must not overlap."""
    out: dict[str, _Member] = {}
    spans: list[tuple[int, int, str]] = []
    for info in zf.infolist():
        if info.filename in out:
            raise fail(f"member {brief(info.filename)} appears twice")
        if not 0 <= info.header_offset < size:
            raise fail(f"member {brief(info.filename)} starts outside the file")
        f.seek(info.header_offset)
        raw = f.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size or raw[:4] != _LOCAL_MAGIC:
            raise fail(f"member {brief(info.filename)} has no local header at {info.header_offset}")
        name_len, extra_len = _LOCAL_HEADER.unpack(raw)[-2:]
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        end = start + info.compress_size
        if end > size:
            raise fail(f"member {brief(info.filename)} ends at byte {end}, past the end ({size})")
        out[info.filename] = _Member(info, start)
        spans.append((info.header_offset, end, info.filename))
    spans.sort()
    for (_, end, a), (begin, _, b) in itertools.pairwise(spans):
        if begin < end:
            raise fail(f"members {brief(a)} and {brief(b)} overlap")
    directory = getattr(zf, "start_dir", size)
    if spans and spans[-1][1] > directory:
        raise fail(f"member {brief(spans[-1][2])} overlaps the central directory")
    return out


def _read_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, fail: Callable[[str], FormatError]
) -> bytes:
    if info.file_size > MAX_PICKLE:
        raise fail(f"{brief(info.filename)} is {info.file_size} bytes (limit {MAX_PICKLE})")
    try:
        with zf.open(info) as m:
            data = m.read(info.file_size + 1)
    except Exception as e:
        raise fail(f"cannot read {brief(info.filename)}: {brief(str(e))}") from None
    if len(data) != info.file_size:
        raise fail(f"{brief(info.filename)} does not hold the {info.file_size} bytes it claims")
    return data


# --- the restricted unpickler: stand-ins for everything data.pkl may name -------------------


class _Sealed:
    """Stand-ins the pickle may not alter: BUILD on one would rewrite what we trust."""

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("a pickle may not set the state of a tensor or storage")


@dataclass(frozen=True)
class _StorageType(_Sealed):
    dtype: str
    typed: bool


@dataclass(frozen=True)
class _DType(_Sealed):
    name: str | None  # canonical dtype, None if unknown


@dataclass
class _Storage(_Sealed):
    key: str
    dtype: str
    typed: bool  # a legacy <Type>Storage counts elements; UntypedStorage counts bytes
    numel: int


@dataclass
class _Tensor(_Sealed):
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str | None


class _Inert:
    """Any other object the pickle builds: accepts every call and every state, does nothing."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


def _ints(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, tuple | list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in x
    ):
        raise ValueError(f"{what} is not a tuple of non-negative integers")
    return tuple(x)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: str | None) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise ValueError("a tensor is rebuilt from something that is not a storage")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError("a tensor has a bad storage offset")
    size, stride = _ints(size, "a tensor size"), _ints(stride, "a tensor stride")
    if len(size) != len(stride):
        raise ValueError("a tensor's size and stride differ in length")
    return _Tensor(storage, offset, size, stride, dtype)


def _rebuild_v2(storage, offset, size, stride, *_rest) -> _Tensor:
    return _tensor(storage, offset, size, stride, getattr(storage, "dtype", None))


def _rebuild_v3(storage, offset, size, stride, _grad, _hooks, dtype, *_rest) -> _Tensor:
    if not isinstance(dtype, _DType):
        raise ValueError("a tensor's dtype is not a torch dtype")
    return _tensor(storage, offset, size, stride, dtype.name)


def _rebuild_parameter(data, *_rest) -> Any:
    return data


def _rebuild_from_type(func, _new_type, args, _state) -> Any:
    if not callable(func) or not isinstance(args, tuple):
        raise ValueError("bad _rebuild_from_type_v2 call")
    return func(*args)


def _stand_ins() -> dict[str, Any]:
    out: dict[str, Any] = {
        "collections.OrderedDict": OrderedDict,
        "torch._utils._rebuild_tensor": _rebuild_v2,
        "torch._utils._rebuild_tensor_v2": _rebuild_v2,
        "torch._utils._rebuild_tensor_v3": _rebuild_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
        "torch.storage.UntypedStorage": _StorageType("U8", typed=False),
    }
    for cls, dtype in dtypes.TORCH_STORAGE_DTYPES.items():
        out[f"torch.{cls}"] = _StorageType(dtype, typed=True)
    for name, dtype in dtypes.TORCH_DTYPES.items():
        out[f"torch.{name}"] = _DType(dtype)
    return out


_STAND_INS = _stand_ins()


class _Loader(pickle.Unpickler):
    """Unpickles data.pkl into stand-ins, recording every storage it references."""

    def __init__(self, data: bytes, *, allow_unsafe: bool):
        super().__init__(io.BytesIO(data))
        self.allow_unsafe = allow_unsafe
        self.storages: dict[str, _Storage] = {}
        self._inert: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in _STAND_INS:
            return _STAND_INS[full]
        if full not in ALLOWED_GLOBALS and not self.allow_unsafe:
            # pickle_scan refused these already; this is the second lock on the door.
            raise pickle.UnpicklingError(f"{full} is not allowed")
        # A fresh type per name: NEWOBJ needs a class, and nothing of the real one is touched.
        return self._inert.setdefault(full, type(name, (_Inert,), {}))

    def persistent_load(self, pid: Any) -> _Storage:
        if (
            not isinstance(pid, tuple)
            or len(pid) < 5
            or pid[0] != "storage"
            or not isinstance(pid[1], _StorageType)
            or not isinstance(pid[2], str)
            or not isinstance(pid[4], int)
            or pid[4] < 0
        ):
            raise pickle.UnpicklingError(f"unknown persistent id {brief(pid)}")
        kind, key, numel = pid[1], pid[2], pid[4]
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, kind.dtype, kind.typed, numel)
        elif (storage.dtype, storage.numel) != (kind.dtype, numel):
            raise pickle.UnpicklingError(f"storage {brief(key)} is described two ways")
        return storage


def _walk(root: Any) -> list[tuple[str, _Tensor]]:
    """Every tensor reachable through dicts, lists and tuples, with its dotted key path."""
    out: list[tuple[str, _Tensor]] = []
    seen: set[int] = set()

    def visit(obj: Any, path: tuple[str, ...]) -> None:
        if isinstance(obj, _Tensor):
            if len(out) >= MAX_TENSORS:
                raise ValueError(f"more than {MAX_TENSORS} tensors")
            out.append((".".join(path) or "tensor", obj))
            return
        if isinstance(obj, dict):
            items = list(obj.items())
        elif isinstance(obj, list | tuple):
            items = list(enumerate(obj))
        else:
            return
        if id(obj) in seen or len(path) >= MAX_DEPTH:
            return
        seen.add(id(obj))
        for key, value in items:
            if isinstance(key, str | int | float | bool) or key is None:
                visit(value, (*path, str(key)))

    visit(root, ())
    return out


def _contiguous(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for n, s in zip(reversed(size), reversed(stride), strict=True):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def _tables(
    prefix: str,
    members: dict[str, _Member],
    storages: dict[str, _Storage],
    named: list[tuple[str, _Tensor]],
    fail: Callable[[str], FormatError],
) -> tuple[list[TensorInfo], dict[str, Segment], list[str]]:
    """The tensor table and one segment per storage record."""
    records = {
        name[len(prefix) + len("data/") :]: m
        for name, m in members.items()
        if name.startswith(prefix + "data/") and m.info.compress_type == zipfile.ZIP_STORED
    }
    for key, storage in storages.items():
        member = members.get(f"{prefix}data/{key}")
        if member is None:
            raise fail(f"the pickle references storage {brief(key)}, which the archive lacks")
        nbytes = storage.numel * max(dtypes.itemsize(storage.dtype), 1)
        if member.info.file_size < nbytes:
            raise fail(
                f"storage {brief(key)} holds {member.info.file_size} bytes, "
                f"the pickle says {nbytes}"
            )

    tensors: list[TensorInfo] = []
    noncontiguous: list[str] = []
    first_user: dict[str, str] = {}
    views: dict[str, set[str | None]] = {}
    names: set[str] = set()
    for name, t in named:
        if name in names:
            continue  # two key paths that join to the same dotted name: the first one wins
        names.add(name)
        key = t.storage.key
        first_user.setdefault(key, name)
        views.setdefault(key, set()).add(t.dtype)
        isz = dtypes.itemsize(t.dtype)
        record = records.get(key)
        if isz == 0 or record is None:
            continue
        numel = 1
        for n in t.size:
            numel *= n
        if numel:
            last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True))
            if (last + 1) * isz > record.info.file_size:
                raise fail(f"tensor {brief(name)} reaches past the end of its storage")
        if not _contiguous(t.size, t.stride):
            noncontiguous.append(name)
            continue
        tensors.append(
            TensorInfo(name, t.dtype, t.size, record.data_offset + t.offset * isz, numel * isz)
        )

    segments: dict[str, Segment] = {}
    for key, record in records.items():
        storage = storages.get(key)
        dtype = storage.dtype if storage is not None else None
        if storage is not None and not storage.typed and len(views.get(key, ())) == 1:
            dtype = next(iter(views[key]))  # an untyped storage viewed as one dtype
        name = first_user.get(key, f"data/{key}")
        segments[key] = Segment(
            record.data_offset, record.info.compress_size, name, dtype, dtypes.itemsize(dtype)
        )
    return tensors, segments, noncontiguous


# --- legacy (pre-zip) torch.save files --------------------------------------------------------


def legacy_storage_sizes(object_pickle: bytes) -> dict[str, tuple[int, int]]:
    """Each storage of a legacy file's object pickle: (element count, bytes per element).

    Legacy records count elements of the storage's own type (``torch.FloatStorage``: 4 bytes
    each); an untyped storage counts bytes. Call only on a pickle ``pickle_scan`` passed.
    """
    loader = _Loader(object_pickle, allow_unsafe=False)
    loader.load()
    return {
        key: (s.numel, dtypes.itemsize(s.dtype) if s.typed else 1)
        for key, s in loader.storages.items()
    }


def parse_torch_legacy(
    path: str | os.PathLike[str],
    object_pickle: bytes,
    records: dict[str, tuple[int, int]],
    size: int,
) -> Layout:
    """The layout of a legacy torch file whose storage records lie at ``records``.

    ``records`` maps each storage key to the (offset, length) of its raw bytes, as
    ``pickle_files`` walked them; each record becomes a tensor segment, as a zip archive's do.
    """

    def fail(problem: str) -> FormatError:
        return FormatError(f"{os.fspath(path)}: not a valid legacy torch checkpoint: {problem}")

    loader = _Loader(object_pickle, allow_unsafe=False)
    try:
        named = _walk(loader.load())
    except Exception as e:
        raise fail(f"the object pickle cannot be understood: {brief(str(e))}") from None
    members: dict[str, _Member] = {}
    for key, (offset, length) in records.items():
        info = zipfile.ZipInfo(f"data/{key}")
        info.file_size = info.compress_size = length
        info.compress_type = zipfile.ZIP_STORED
        members[info.filename] = _Member(info, offset)
    tensors, segments_by_key, noncontiguous = _tables("", members, loader.storages, named, fail)
    metadata: dict[str, Any] = {"storages": len(segments_by_key), "legacy": True, "pickle": True}
    if noncontiguous:
        metadata["noncontiguous"] = noncontiguous
    segments = tile(size, list(segments_by_key.values()), lambda p: fail(f"storages {p}"))
    layout = Layout("torch", size, segments, tensors, metadata)
    layout.check()
    return layout
