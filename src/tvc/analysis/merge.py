"""Weight merge of two versions, tensor by tensor, committed as a version with two parents.

A three-way merge against the merge base O (see :mod:`tvc.analysis.ancestry`), per tensor of
every safetensors file both sides have:

- changed on neither side, or identically on both: kept;
- changed on one side only: that side's tensor, for ``average``, ``ours`` and ``theirs``;
- changed on both sides, differently — a **conflict** — resolved by the strategy:
  ``average`` (A+B)/2, ``ours`` A, ``theirs`` B.

``task-arithmetic`` is O + λ_A(A−O) + λ_B(B−O) on *every* tensor either side changed: it
scales task vectors, so with λ_A = 0.5 a tensor only A changed moves half way, as the method
defines it. With λ = 1 (the default) a one-sided change is the changed side exactly, so it is
copied byte for byte, and the rule coincides with the others'.

Values are computed in float64 block by block and cast back to the tensor's dtype, rounding to
nearest even (BF16 included; integers are rounded and clipped). Unresolvable conflicts raise
:class:`ConflictError` (exit 11) before anything is written: shapes or dtypes that differ between
the sides (only ``ours``/``theirs`` can choose), a tensor one side deleted and the other changed,
and values that cannot be computed with (BOOL, quantized types). GGUF, torch archives and other
files are merged as whole files: one-sided changes win; both changed → ``ours``/``theirs`` (or
``file_strategy``) decide, else a conflict.

Merged safetensors files keep A's layout: its tensor order, its ``__metadata__``, its header's
key order; a file whose every tensor comes from one side is that side's file, byte for byte.
"""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvc.analysis import tensors as T
from tvc.analysis.ancestry import merge_base
from tvc.errors import ConflictError, UsageError
from tvc.formats.safetensors import encode_header
from tvc.repo import names, paths
from tvc.repo.version import FileEntry, Version

if TYPE_CHECKING:
    from tvc.repo.repository import CommitResult, Progress, Repository

STRATEGIES = ("average", "task-arithmetic", "ours", "theirs")
FILE_STRATEGIES = ("ours", "theirs")
MERGEABLE_FORMAT = "safetensors"


@dataclass
class TensorMerge:
    """What happened to one tensor that changed on at least one side."""

    path: str
    name: str
    changed_a: bool
    changed_b: bool
    source: str  # a | b | merged | removed
    conflict: bool = False  # both sides changed it, differently
    resolution: str | None = None  # the strategy that resolved the conflict
    dtype: str | None = None
    shape: tuple[int, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "changed_a": self.changed_a,
            "changed_b": self.changed_b,
            "source": self.source,
            "conflict": self.conflict,
            "resolution": self.resolution,
            "dtype": self.dtype,
            "shape": list(self.shape) if self.shape is not None else None,
        }


@dataclass
class FileMerge:
    path: str
    source: str  # a | b | merged | removed
    changed_a: bool
    changed_b: bool
    conflict: bool = False  # an opaque file both sides changed, differently
    resolution: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "source": self.source,
            "changed_a": self.changed_a,
            "changed_b": self.changed_b,
            "conflict": self.conflict,
            "resolution": self.resolution,
        }


@dataclass
class MergeResult:
    a: Version
    b: Version
    ancestor: Version | None
    strategy: str
    lambda_a: float
    lambda_b: float
    branch: str
    message: str
    files: list[FileMerge] = field(default_factory=list)
    tensors: list[TensorMerge] = field(default_factory=list)
    unchanged_tensors: int = 0
    commit: CommitResult | None = None  # None for a dry run

    @property
    def version(self) -> Version | None:
        return self.commit.version if self.commit else None

    @property
    def conflicts(self) -> list[TensorMerge | FileMerge]:
        return [t for t in self.tensors if t.conflict] + [f for f in self.files if f.conflict]

    def tensor(self, name: str, path: str | None = None) -> TensorMerge:
        for t in self.tensors:
            if t.name == name and (path is None or t.path == path):
                return t
        raise KeyError(name)

    def counts(self) -> dict[str, int]:
        c = {"unchanged": self.unchanged_tensors, "a": 0, "b": 0, "merged": 0, "removed": 0}
        for t in self.tensors:
            c[t.source] += 1
        c["conflicts"] = sum(1 for t in self.tensors if t.conflict)
        return c

    def to_json(self) -> dict[str, Any]:
        def side(v: Version | None) -> dict[str, Any] | None:
            return None if v is None else {"ref": v.ref, "id": v.id}

        return {
            "ref": self.version.ref if self.version else None,
            "id": self.version.id if self.version else None,
            "branch": self.branch,
            "message": self.message,
            "a": side(self.a),
            "b": side(self.b),
            "ancestor": side(self.ancestor),
            "strategy": self.strategy,
            "lambda_a": self.lambda_a,
            "lambda_b": self.lambda_b,
            "summary": {"tensors": self.counts(), "conflicts": len(self.conflicts)},
            "conflicts": [
                {"path": c.path, "name": getattr(c, "name", None), "resolution": c.resolution}
                for c in self.conflicts
            ],
            "files": [f.to_json() for f in self.files],
            "tensors": [t.to_json() for t in self.tensors],
            "commit": self.commit.to_json() if self.commit else None,
        }


# -- which branch a merge lands on -----------------------------------------------------------
def target_branch(repo: Repository, ref_text: str, a: Version, branch: str | None) -> str:
    """The branch to commit on: ``branch``, the branch REF_A names, or the one at A.

    It must exist and point at A (the merge's first parent is the branch head).
    """
    heads = {r["name"]: r["id"] for r in repo.refs_of(a.model) if r["kind"] == "branch"}
    if branch is not None:
        if branch not in heads:
            raise UsageError(
                f"{a.model} has no branch {branch!r} (create it: tvc branch {a.model} {branch} "
                f"--from v{a.number})"
            )
        if heads[branch] != a.id:
            raise UsageError(f"branch {branch} of {a.model} is not at {a.ref}: merge into its head")
        return branch
    r = names.parse_ref(ref_text)
    if r.ancestors == 0 and r.rev in heads and heads[r.rev] == a.id:
        return r.rev
    at_a = sorted(n for n, vid in heads.items() if vid == a.id)
    if len(at_a) == 1:
        return at_a[0]
    if not at_a:
        raise UsageError(f"{a.ref} is not the head of a branch: merge into a branch (--branch)")
    raise UsageError(f"several branches are at {a.ref} ({', '.join(at_a)}): choose with --branch")


# -- planning --------------------------------------------------------------------------------
@dataclass
class _FilePlan:
    path: str
    record: FileMerge
    # For a tensor-merged file: every output tensor, in order, with its inputs by role
    # ("a", "b", "o"); the TensorMerge's ``source`` says which input (or "merged") it is.
    outputs: list[tuple[TensorMerge, dict[str, T.TensorRef]]] = field(default_factory=list)


class _Planner:
    """Decides, from manifests only, where every file and tensor of the merge comes from."""

    def __init__(
        self,
        repo: Repository,
        a: Version,
        b: Version,
        o: Version | None,
        strategy: str,
        lambdas: tuple[float, float],
        file_strategy: str | None,
    ) -> None:
        self.repo, self.a, self.b, self.o = repo, a, b, o
        self.strategy = strategy
        self.lambda_a, self.lambda_b = lambdas
        self.file_strategy = file_strategy or (strategy if strategy in FILE_STRATEGIES else None)
        self.unresolved: list[str] = []  # conflicts the strategy cannot resolve
        self.records: list[TensorMerge] = []  # tensors changed on at least one side
        self.unchanged = 0

    @property
    def arithmetic(self) -> bool:
        return self.strategy == "task-arithmetic"

    def tensors_of(self, v: Version | None, p: str) -> dict[str, T.TensorRef]:
        return T.file_tensors(self.repo, v, p) if v is not None else {}

    def plan(self) -> list[_FilePlan]:
        fa = {f.path: f for f in self.a.files}
        fb = {f.path: f for f in self.b.files}
        fo = {f.path: f for f in self.o.files} if self.o else {}
        order = [*fa, *(p for p in fb if p not in fa)]
        plans = [self._file(p, fa.get(p), fb.get(p), fo.get(p)) for p in order]
        for p in fo:
            if p not in fa and p not in fb:  # deleted on both sides
                plans.append(_FilePlan(p, FileMerge(p, "removed", True, True)))
                self._report(p, None, "a", both=True)
        return plans

    def _file(
        self, p: str, x: FileEntry | None, y: FileEntry | None, o: FileEntry | None
    ) -> _FilePlan:
        dx, dy, do = (f.digest if f else None for f in (x, y, o))
        changed_a, changed_b = dx != do, dy != do
        rec = FileMerge(p, "a", changed_a, changed_b)
        plan = _FilePlan(p, rec)
        if dx == dy:  # unchanged, or the same change on both sides: it counts once
            if x is not None and (self.o is None or dx == do):
                self.unchanged += len(self.tensors_of(self.a, p))
            else:
                self._report(p, self.a, "a", both=True)
            return plan
        mergeable = (
            x is not None
            and y is not None
            and x.format == y.format == MERGEABLE_FORMAT
            and (o is None or o.format == MERGEABLE_FORMAT)
        )
        scaled = self.arithmetic and (
            (changed_a and self.lambda_a != 1.0) or (changed_b and self.lambda_b != 1.0)
        )
        if mergeable and ((changed_a and changed_b) or scaled):
            rec.source = "merged"
            self._tensors(plan)
            return plan
        if not changed_b:
            side = "a"
        elif not changed_a:
            side = "b"
        else:
            rec.conflict = True
            if self.file_strategy is None:
                what = (
                    "deleted on one side and changed on the other"
                    if x is None or y is None
                    else f"both sides changed this {_kind(x, y)} file"
                )
                self.unresolved.append(
                    f"{p}: {what} (resolve with --strategy ours|theirs or --files ours|theirs)"
                )
                return plan
            rec.resolution = self.file_strategy
            side = "a" if self.file_strategy == "ours" else "b"
        rec.source = side if (x if side == "a" else y) is not None else "removed"
        self._report(p, self.a if side == "a" else self.b, side)
        return plan

    def _report(self, p: str, taken: Version | None, side: str, both: bool = False) -> None:
        """Record the tensor changes a whole-file decision implies (nothing is computed)."""
        mine = self.tensors_of(taken, p)
        old = self.tensors_of(self.o, p)
        ca, cb = side == "a" or both, side == "b" or both
        for name, ref in mine.items():
            before = old.get(name)
            if before is not None and before.fingerprint == ref.fingerprint:
                self.unchanged += 1
                continue
            tm = TensorMerge(p, name, ca, cb, side, dtype=ref.dtype, shape=ref.shape)
            self.records.append(tm)
        for name in old:
            if name not in mine:
                self.records.append(TensorMerge(p, name, ca, cb, "removed"))

    def _tensors(self, plan: _FilePlan) -> None:
        p = plan.path
        ta, tb = self.tensors_of(self.a, p), self.tensors_of(self.b, p)
        to = self.tensors_of(self.o, p)
        for name in [*ta, *(n for n in tb if n not in ta)]:
            x, y, o = ta.get(name), tb.get(name), to.get(name)
            tm = self._tensor(p, name, x, y, o)
            inputs = {k: r for k, r in (("a", x), ("b", y), ("o", o)) if r is not None}
            if tm is None:
                self.unchanged += 1
                assert x is not None
                tm = TensorMerge(p, name, False, False, "a", dtype=x.dtype, shape=x.shape)
            else:
                self.records.append(tm)
            if tm.source != "removed":
                plan.outputs.append((tm, inputs))
        for name in to:
            if name not in ta and name not in tb:
                self.records.append(TensorMerge(p, name, True, True, "removed"))

    def _tensor(
        self,
        p: str,
        name: str,
        x: T.TensorRef | None,
        y: T.TensorRef | None,
        o: T.TensorRef | None,
    ) -> TensorMerge | None:
        """Where one tensor of a tensor-merged file comes from; None when nobody changed it."""
        fx, fy, fo = (r.fingerprint if r else None for r in (x, y, o))
        changed_a, changed_b = fx != fo, fy != fo
        if (not changed_a and not changed_b) or (self.o is None and fx == fy):
            return None  # (without an ancestor, "equal on both sides" is all we can tell)
        tm = TensorMerge(p, name, changed_a, changed_b, "a")
        tm.conflict = changed_a and changed_b and fx != fy

        def take(side: str) -> TensorMerge:
            ref = x if side == "a" else y
            tm.source = side if ref is not None else "removed"
            if ref is not None:
                tm.dtype, tm.shape = ref.dtype, ref.shape
            return tm

        def fail(why: str) -> TensorMerge:
            self.unresolved.append(f"{p}:{name}: {why}")
            return tm

        def merged(ref: T.TensorRef) -> TensorMerge:
            tm.source, tm.dtype, tm.shape = "merged", ref.dtype, ref.shape
            return tm

        if fx == fy:  # the same change on both sides counts once
            return take("a")
        if tm.conflict:
            tm.resolution = self.strategy
        if self.arithmetic:
            one = "a" if not changed_b else "b" if not changed_a else None
            lam = self.lambda_a if one == "a" else self.lambda_b
            if one is not None and (lam == 1.0 or (x if one == "a" else y) is None or o is None):
                # λ = 1: the changed side exactly; a deletion or an addition has no task
                # vector to scale.
                return take(one)
            if o is None:
                return fail("added on both sides with different values (no ancestor to subtract)")
            if x is None or y is None:
                return fail("deleted on one side and changed on the other")
            if not (x.dtype == y.dtype == o.dtype and x.shape == y.shape == o.shape):
                return fail(_mismatch(x, y, o))
            if x.dtype not in T.MERGEABLE_DTYPES:
                return fail(f"{x.dtype} values cannot be computed with")
            return merged(x)
        if not changed_b:
            return take("a")
        if not changed_a:
            return take("b")
        if self.strategy in FILE_STRATEGIES:
            return take("a" if self.strategy == "ours" else "b")
        if x is None or y is None:
            return fail("deleted on one side and changed on the other")
        if x.dtype != y.dtype or x.shape != y.shape:
            return fail(_mismatch(x, y, None))
        if x.dtype not in T.MERGEABLE_DTYPES:
            return fail(f"{x.dtype} values cannot be averaged")
        return merged(x)


def _mismatch(x: T.TensorRef, y: T.TensorRef, o: T.TensorRef | None) -> str:
    sides = [("A", x), ("B", y)] + ([("ancestor", o)] if o is not None else [])
    shown = ", ".join(f"{n} {r.dtype}{list(r.shape)}" for n, r in sides)
    return f"shape or dtype differs ({shown}); only --strategy ours|theirs can choose"


def _kind(x: FileEntry, y: FileEntry) -> str:
    if x.format != y.format:
        return f"{x.format}/{y.format}"
    return x.format


# -- running a merge -------------------------------------------------------------------------
def merge_versions(
    repo: Repository,
    a: Version,
    b: Version,
    *,
    strategy: str,
    branch: str,
    message: str | None = None,
    lambda_a: float = 1.0,
    lambda_b: float = 1.0,
    ancestor: Version | None = None,
    file_strategy: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> MergeResult:
    """Merge ``b`` into ``a`` and commit the result on ``branch`` (whose head must be ``a``).

    ``ancestor`` overrides the merge base. ``file_strategy`` (ours/theirs) resolves opaque
    files both sides changed when the strategy itself does not. ``dry_run`` plans and reports
    (conflicts included) without computing or committing anything.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown merge strategy {strategy!r} (choose: {', '.join(STRATEGIES)})")
    if file_strategy not in (None, *FILE_STRATEGIES):
        raise UsageError(f"--files must be ours or theirs, not {file_strategy!r}")
    for lam in (lambda_a, lambda_b):
        if not isinstance(lam, int | float) or lam != lam or lam in (float("inf"), float("-inf")):
            raise UsageError(f"λ must be a finite number, not {lam!r}")
    if a.id == b.id:
        raise UsageError(f"{a.ref} and {b.ref} are the same version: nothing to merge")
    o = ancestor if ancestor is not None else merge_base(repo, a, b).version
    if o is not None and o.id == b.id:
        raise UsageError(f"{a.ref} already contains {b.ref}: nothing to merge")
    if o is None and strategy == "task-arithmetic":
        raise ConflictError(
            f"{a.ref} and {b.ref} have no common ancestor (no shared parent, no shared --base): "
            "task arithmetic needs one (name it with --ancestor REF)"
        )
    lambdas = (float(lambda_a), float(lambda_b))
    planner = _Planner(repo, a, b, o, strategy, lambdas, file_strategy)
    plans = planner.plan()
    if planner.unresolved:
        n = len(planner.unresolved)
        shown = "; ".join(planner.unresolved[:5]) + ("; …" if n > 5 else "")
        raise ConflictError(
            f"merge of {b.ref} into {a.ref} ({strategy}): {n} unresolved conflict(s): {shown}"
        )
    result = MergeResult(
        a=a,
        b=b,
        ancestor=o,
        strategy=strategy,
        lambda_a=float(lambda_a),
        lambda_b=float(lambda_b),
        branch=branch,
        message=message or f"Merge {b.ref} into {a.ref} ({_describe(strategy, *lambdas)})",
        files=[p.record for p in plans],
        tensors=planner.records,
        unchanged_tensors=planner.unchanged,
    )
    if dry_run:
        return result
    writer = _Writer(repo, a, b, o, strategy, lambdas)
    # The merged files are staged outside the registry (its tmp/ is gc's to empty).
    with tempfile.TemporaryDirectory(prefix="tvc-merge-") as tmp:
        for plan in plans:
            writer.write(plan, Path(tmp))
        result.commit = repo.commit(
            a.model,
            [tmp],
            result.message,
            branch=branch,
            merge_parents=[b.id],
            expected_head=a.id,
            progress=progress,
        )
    return result


def _describe(strategy: str, lambda_a: float, lambda_b: float) -> str:
    if strategy == "task-arithmetic" and (lambda_a, lambda_b) != (1.0, 1.0):
        return f"{strategy}, λ_A={lambda_a:g}, λ_B={lambda_b:g}"
    return strategy


class _Writer:
    """Materializes a plan's files, streaming tensors block by block."""

    def __init__(
        self,
        repo: Repository,
        a: Version,
        b: Version,
        o: Version | None,
        strategy: str,
        lambdas: tuple[float, float],
    ) -> None:
        self.repo = repo
        self.sides = {"a": a, "b": b}
        self.o = o
        self.strategy = strategy
        self.lambda_a, self.lambda_b = lambdas

    def write(self, plan: _FilePlan, dest: Path) -> None:
        source = plan.record.source
        if source == "removed":
            return
        target = paths.destination(dest, plan.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source in self.sides:
            self._copy(self.sides[source], plan.path, target)
            return
        for side, version in self.sides.items():
            names_ = list(T.file_tensors(self.repo, version, plan.path))
            if [tm.name for tm, _i in plan.outputs] == names_ and all(
                tm.source == side for tm, _i in plan.outputs
            ):
                # Every tensor from one side, none added or removed: that side's file as it is.
                plan.record.source = side
                self._copy(version, plan.path, target)
                return
        self._write_safetensors(plan, target)

    def _copy(self, version: Version, path: str, target: Path) -> None:
        with open(target, "wb") as out:
            for block in self.repo.iter_file(version, path):
                out.write(block)

    def _header(self, version: Version, path: str) -> dict[str, Any]:
        """The safetensors header of a stored file, keys in file order (reads its chunks only)."""
        fe = next(f for f in version.files if f.path == path)
        manifest = self.repo.manifest(fe.manifest_id)
        end = min((t.offset for t in manifest.tensors), default=manifest.size)
        first, last = manifest.chunk_range(0, end)
        ids = [cid for cid, _n in manifest.chunks[first:last]]
        raw = b"".join(self.repo.store.read_many(ids))
        (n,) = struct.unpack("<Q", raw[:8])
        return json.loads(raw[8 : 8 + n].decode("utf-8"))

    def _write_safetensors(self, plan: _FilePlan, target: Path) -> None:
        a = self.sides["a"]
        old = self._header(a, plan.path)
        entries: dict[str, dict[str, Any]] = {}
        pos = 0
        for tm, inputs in plan.outputs:
            ref = inputs["a" if tm.source == "merged" else tm.source]
            length = ref.entry.length
            entries[tm.name] = {
                "dtype": ref.dtype,
                "shape": list(ref.shape),
                "data_offsets": [pos, pos + length],
            }
            pos += length
        header: dict[str, Any] = {}
        for key, value in old.items():  # A's key order; its __metadata__
            if key == "__metadata__":
                header[key] = value
            elif key in entries:
                header[key] = entries[key]
        for name, entry in entries.items():  # tensors only B has, in B's order
            header.setdefault(name, entry)
        written = 0
        with open(target, "wb") as out:
            out.write(encode_header(header))
            for tm, inputs in plan.outputs:
                for block in self._tensor_bytes(tm, inputs):
                    out.write(block)
                    written += len(block)
        if written != pos:  # pragma: no cover - a bug, not a user error
            raise AssertionError(f"{plan.path}: wrote {written} data bytes, planned {pos}")

    def _tensor_bytes(
        self, tm: TensorMerge, inputs: dict[str, T.TensorRef]
    ) -> Iterator[bytes | memoryview]:
        if tm.source in ("a", "b"):
            yield from T.iter_raw(self.repo, inputs[tm.source])
            return
        combine: Callable[..., Any]
        if self.strategy == "task-arithmetic":
            la, lb = self.lambda_a, self.lambda_b
            refs = [inputs["o"], inputs["a"], inputs["b"]]

            def combine(vo, va, vb):
                return vo + la * (va - vo) + lb * (vb - vo)

        else:  # average
            refs = [inputs["a"], inputs["b"]]

            def combine(va, vb):
                return (va + vb) / 2

        dtype = refs[-1].dtype
        for blocks in T.iter_aligned(self.repo, refs):
            yield T.encode(combine(*blocks), dtype)
