"""Diff of two versions: files, tensors, params, metrics, data sets, small text files.

Tensors are compared in two passes. The first uses manifests only: a tensor whose fingerprint
(dtype, shape, chunk ids) is the same on both sides is *unchanged* and its bytes are never
read, so comparing two 70 GB checkpoints that differ in one adapter reads that adapter only.
The second pass streams each changed tensor, one at a time and block by block, and reduces it
to its change statistics in float64.

The two versions may belong to different models (a fine-tune against its base): files are
matched by path, tensors by (path, name).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tvc.analysis import tensors as T
from tvc.repo.version import FileEntry, Version, iso

if TYPE_CHECKING:
    from tvc.repo.repository import Progress, Repository
    from tvc.store.chunkstore import ChunkInfo

#: Files diffed as text when both sides are at most this big and valid UTF-8.
TEXT_LIMIT = 1 << 20
TEXT_SUFFIXES = (".json", ".txt", ".md", ".yaml", ".yml", ".toml", ".cfg", ".ini")

TENSOR_STATUSES = ("changed", "shape_changed", "dtype_changed", "added", "removed", "unchanged")


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


@dataclass
class TensorDiff:
    path: str
    name: str
    status: str  # one of TENSOR_STATUSES
    dtype_a: str | None
    dtype_b: str | None
    shape_a: tuple[int, ...] | None
    shape_b: tuple[int, ...] | None
    numel: int | None = None  # elements compared (changed / dtype_changed with numbers)
    changed_elements: int | None = None
    l2: float | None = None  # ‖B−A‖
    rel_l2: float | None = None  # ‖B−A‖ / ‖A‖ (None when ‖A‖ = 0 and B ≠ A)
    max_abs: float | None = None  # max |B−A|
    cosine: float | None = None  # ⟨A,B⟩ / (‖A‖‖B‖) (None when either norm is 0)
    norm_a: float | None = None
    norm_b: float | None = None

    @property
    def has_stats(self) -> bool:
        return self.l2 is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "status": self.status,
            "dtype_a": self.dtype_a,
            "dtype_b": self.dtype_b,
            "shape_a": list(self.shape_a) if self.shape_a is not None else None,
            "shape_b": list(self.shape_b) if self.shape_b is not None else None,
            "numel": self.numel,
            "changed_elements": self.changed_elements,
            "l2": _finite(self.l2),
            "rel_l2": _finite(self.rel_l2),
            "max_abs": _finite(self.max_abs),
            "cosine": _finite(self.cosine),
            "norm_a": _finite(self.norm_a),
            "norm_b": _finite(self.norm_b),
        }


@dataclass
class FileDiff:
    path: str
    status: str  # added | removed | changed | unchanged
    a: FileEntry | None
    b: FileEntry | None
    text_diff: str | None = None  # unified diff, for small text files that changed

    def to_json(self) -> dict[str, Any]:
        def side(fe: FileEntry | None) -> dict[str, Any] | None:
            if fe is None:
                return None
            return {"size": fe.size, "digest": fe.digest, "format": fe.format}

        return {
            "path": self.path,
            "status": self.status,
            "a": side(self.a),
            "b": side(self.b),
            "text_diff": self.text_diff,
        }


@dataclass
class ValueDiff:
    """One key of params, metrics or data sets, side by side."""

    key: str
    status: str  # added | removed | changed | unchanged
    a: Any
    b: Any

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "status": self.status, "a": self.a, "b": self.b}


@dataclass
class Diff:
    a: Version
    b: Version
    files: list[FileDiff] = field(default_factory=list)
    tensors: list[TensorDiff] = field(default_factory=list)
    params: list[ValueDiff] = field(default_factory=list)
    metrics: list[ValueDiff] = field(default_factory=list)
    datasets: list[ValueDiff] = field(default_factory=list)

    def tensor(self, name: str, path: str | None = None) -> TensorDiff:
        for t in self.tensors:
            if t.name == name and (path is None or t.path == path):
                return t
        raise KeyError(name)

    def counts(self) -> dict[str, dict[str, int]]:
        files = {s: 0 for s in ("added", "removed", "changed", "unchanged")}
        for f in self.files:
            files[f.status] += 1
        tensors = {s: 0 for s in TENSOR_STATUSES}
        for t in self.tensors:
            tensors[t.status] += 1
        return {"files": files, "tensors": {"total": len(self.tensors), **tensors}}

    def summary(self) -> str:
        c = self.counts()["tensors"]
        text = (
            f"{c['total']} tensors: {c['unchanged']} unchanged, {c['changed']} changed, "
            f"{c['added']} added, {c['removed']} removed"
        )
        reshaped = c["shape_changed"] + c["dtype_changed"]
        return text + (f", {reshaped} shape/dtype changed" if reshaped else "")

    def to_json(self) -> dict[str, Any]:
        def side(v: Version) -> dict[str, Any]:
            return {
                "ref": v.ref,
                "id": v.id,
                "model": v.model,
                "version": v.number,
                "created": iso(v.created),
            }

        return {
            "a": side(self.a),
            "b": side(self.b),
            "summary": self.counts(),
            "files": [f.to_json() for f in self.files],
            "tensors": [t.to_json() for t in self.tensors],
            "params": [p.to_json() for p in self.params],
            "metrics": [m.to_json() for m in self.metrics],
            "datasets": [d.to_json() for d in self.datasets],
        }


# -- computing a diff ------------------------------------------------------------------------
def diff_versions(
    repo: Repository,
    a: Version,
    b: Version,
    *,
    path: str | None = None,
    stats: bool = True,
    progress: Progress | None = None,
) -> Diff:
    """Compare version ``a`` (old) with ``b`` (new).

    ``path`` limits files and tensors to one file (or a directory prefix). ``stats=False``
    skips reading changed tensors (statuses only, from manifests).
    """
    out = Diff(a, b)
    out.params = diff_values(a.params, b.params)
    out.metrics = diff_values(a.metrics, b.metrics)
    out.datasets = diff_values(a.datasets, b.datasets)

    files_a = {f.path: f for f in a.files if _selected(f.path, path)}
    files_b = {f.path: f for f in b.files if _selected(f.path, path)}
    to_measure: list[tuple[TensorDiff, T.TensorRef, T.TensorRef]] = []
    for p in sorted(files_a.keys() | files_b.keys()):
        fa, fb = files_a.get(p), files_b.get(p)
        if fa is None:
            status = "added"
        elif fb is None:
            status = "removed"
        else:
            status = "unchanged" if fa.digest == fb.digest else "changed"
        fd = FileDiff(p, status, fa, fb)
        out.files.append(fd)
        ta = T.file_tensors(repo, a, p) if fa else {}
        tb = T.file_tensors(repo, b, p) if fb else {}
        for name in [*ta, *(n for n in tb if n not in ta)]:
            td, pair = _classify(p, name, ta.get(name), tb.get(name))
            out.tensors.append(td)
            if pair is not None:
                to_measure.append((td, *pair))
        if status != "unchanged" and _is_text_candidate(p, fa, fb):
            fd.text_diff = _text_diff(repo, a, b, p, fa, fb)

    if stats:
        total = sum(x.entry.length + y.entry.length for _td, x, y in to_measure)
        # Every changed tensor's index rows in a few batched queries, not a query per tensor.
        known = repo.store.infos(
            (cid for _td, x, y in to_measure for r in (x, y) for cid in r.chunk_ids),
            with_bases=True,
        )
        if progress is not None:
            progress.start("diff", total)
        try:
            for td, x, y in to_measure:
                _measure(repo, td, x, y, known)
                if progress is not None:
                    progress.advance(x.entry.length + y.entry.length)
        finally:
            if progress is not None:
                progress.finish()
    return out


def _selected(p: str, wanted: str | None) -> bool:
    return wanted is None or p == wanted or p.startswith(wanted.rstrip("/") + "/")


def _classify(
    path: str, name: str, x: T.TensorRef | None, y: T.TensorRef | None
) -> tuple[TensorDiff, tuple[T.TensorRef, T.TensorRef] | None]:
    """Status from manifests alone; the pair to read when numbers are wanted."""
    td = TensorDiff(
        path,
        name,
        "",
        x.dtype if x else None,
        y.dtype if y else None,
        x.shape if x else None,
        y.shape if y else None,
    )
    if x is None:
        td.status = "added"
        return td, None
    if y is None:
        td.status = "removed"
        return td, None
    if x.fingerprint == y.fingerprint:
        td.status = "unchanged"
        return td, None
    if x.shape != y.shape:
        td.status = "shape_changed"
        return td, None
    td.status = "changed" if x.dtype == y.dtype else "dtype_changed"
    numeric = x.dtype in T.NUMERIC_DTYPES and y.dtype in T.NUMERIC_DTYPES
    return td, ((x, y) if numeric else None)


def _measure(
    repo: Repository,
    td: TensorDiff,
    x: T.TensorRef,
    y: T.TensorRef,
    known: dict[str, ChunkInfo] | None = None,
) -> None:
    """Stream both tensors once and reduce them to change statistics (float64)."""
    sq_a = sq_b = sq_d = dot = 0.0
    max_abs = 0.0
    changed = 0
    for va, vb in T.iter_aligned(repo, [x, y], known=known):
        d = vb - va
        sq_a += float(np.dot(va, va))
        sq_b += float(np.dot(vb, vb))
        sq_d += float(np.dot(d, d))
        dot += float(np.dot(va, vb))
        if d.size:
            max_abs = max(max_abs, float(np.max(np.abs(d))))
        # A NaN on both sides is no change; -0.0 against 0.0 is none either.
        same = (va == vb) | (np.isnan(va) & np.isnan(vb))
        changed += int(va.size - np.count_nonzero(same))
    na, nb, l2 = math.sqrt(sq_a), math.sqrt(sq_b), math.sqrt(sq_d)
    td.numel = x.numel
    td.changed_elements = changed
    td.l2 = l2
    td.max_abs = max_abs
    td.norm_a, td.norm_b = na, nb
    td.rel_l2 = l2 / na if na > 0 else (0.0 if l2 == 0 else None)
    td.cosine = dot / (na * nb) if na > 0 and nb > 0 else None
    if td.cosine is not None:
        td.cosine = max(-1.0, min(1.0, td.cosine))


def diff_values(a: dict[str, Any], b: dict[str, Any]) -> list[ValueDiff]:
    out = []
    for k in sorted(a.keys() | b.keys()):
        if k not in a:
            out.append(ValueDiff(k, "added", None, b[k]))
        elif k not in b:
            out.append(ValueDiff(k, "removed", a[k], None))
        else:
            out.append(ValueDiff(k, "unchanged" if a[k] == b[k] else "changed", a[k], b[k]))
    return out


# -- text files ------------------------------------------------------------------------------
def _is_text_candidate(p: str, fa: FileEntry | None, fb: FileEntry | None) -> bool:
    if not p.lower().endswith(TEXT_SUFFIXES):
        return False
    return all(fe is None or (fe.size <= TEXT_LIMIT and fe.format == "opaque") for fe in (fa, fb))


def _text_diff(
    repo: Repository,
    a: Version,
    b: Version,
    p: str,
    fa: FileEntry | None,
    fb: FileEntry | None,
) -> str | None:
    try:
        old = repo.read(a, p).decode("utf-8") if fa else ""
        new = repo.read(b, p).decode("utf-8") if fb else ""
    except UnicodeDecodeError:
        return None
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a/{p}" if fa else "/dev/null",
        tofile=f"b/{p}" if fb else "/dev/null",
    )
    text = "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )
    return text or None
