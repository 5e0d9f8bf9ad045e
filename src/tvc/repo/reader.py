"""Reading one version without materializing it: files, file bytes, single tensors.

``tensor(name)`` reads only the chunks that hold that tensor (a 7 GB checkpoint does not have to
be fetched to look at one layer), verifies each, and returns a numpy array.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tvc.errors import AmbiguousRefError, UnknownRefError, UsageError
from tvc.formats import dtypes
from tvc.repo.manifest import Manifest, TensorEntry
from tvc.repo.version import Version
from tvc.store.lazy import lazy_module

np = lazy_module("numpy", globals(), "np")  # numpy loads on first use: cold starts skip it

if TYPE_CHECKING:
    from tvc.repo.repository import Repository


class VersionReader:
    def __init__(self, repo: Repository, version: Version) -> None:
        self.repo = repo
        self.version = version

    @property
    def files(self) -> list[str]:
        return [f.path for f in self.version.files]

    def manifest(self, path: str) -> Manifest:
        return self.repo.manifest(self.repo.file_entry(self.version, path).manifest_id)

    def read(self, path: str) -> bytes:
        return self.repo.read(self.version, path)

    def tensors(self, path: str | None = None) -> list[tuple[str, TensorEntry]]:
        """(file, tensor) for every tensor of the version, or of one file."""
        out = []
        for f in self.version.files:
            if path is None or f.path == path:
                out.extend((f.path, t) for t in self.repo.manifest(f.manifest_id).tensors)
        return out

    def _find(self, name: str, path: str | None) -> tuple[Manifest, TensorEntry]:
        hits = [(p, t) for p, t in self.tensors(path) if t.name == name]
        if not hits:
            raise UnknownRefError(f"{self.version.ref} has no tensor {name!r}")
        if len(hits) > 1:
            where = ", ".join(p for p, _t in hits)
            raise AmbiguousRefError(f"tensor {name!r} is in several files ({where}); pass path=")
        p, t = hits[0]
        return self.manifest(p), t

    def tensor_bytes(self, name: str, path: str | None = None) -> bytes:
        manifest, t = self._find(name, path)
        a, b = manifest.chunk_range(t.offset, t.length)
        ids = [cid for cid, _n in manifest.chunks[a:b]]
        blob = b"".join(self.repo.store.read_many(ids)) if ids else b""
        start = t.offset - (manifest.starts[a] if ids else t.offset)
        return blob[start : start + t.length]

    def tensor(self, name: str, path: str | None = None) -> np.ndarray:
        """The tensor as a numpy array (BF16 widened to float32, losslessly)."""
        _m, t = self._find(name, path)
        raw = self.tensor_bytes(name, path)
        if t.dtype == "BF16":
            u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            return u16.view("<f4").reshape(t.shape)
        npdt = dtypes.numpy_dtype(t.dtype)
        if npdt is None:
            raise UsageError(f"tensor {name!r} has dtype {t.dtype}, which numpy cannot represent")
        return np.frombuffer(raw, dtype=npdt).reshape(t.shape)
