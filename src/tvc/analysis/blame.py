"""Blame: for every tensor (and every file) of a version, the version that last changed it.

Walk first parents back from the version while the tensor's fingerprint (dtype, shape, chunk
ids) stays the same; the oldest version of that unbroken run changed it last. First parents
only, as ``git blame --first-parent``: a tensor that a merge brought in from the other side is
blamed on the merge, and the entry names that other parent (``merged_from``) so the walk can
go on there. Only manifests are read, never tensor data.

A tensor the walk follows back to a version committed with ``--base`` (a fine-tune's first
version, typically) is attributed to that version of this model; when the base version holds
the same bytes, the entry also names the base, so "unchanged since the base model" is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tvc.analysis import tensors as T
from tvc.errors import UnknownRefError
from tvc.repo.version import Version, iso

if TYPE_CHECKING:
    from tvc.repo.repository import Repository


@dataclass(frozen=True)
class BlameEntry:
    path: str
    name: str | None  # None: the whole file
    version: Version  # the version that last changed it
    base: Version | None = None  # the base model's version, when it holds the same bytes
    merged_from: Version | None = None  # when ``version`` is a merge: the other parent it came from

    def to_json(self) -> dict[str, Any]:
        v = self.version
        doc: dict[str, Any] = {"path": self.path}
        if self.name is not None:
            doc["name"] = self.name
        doc["version"] = {
            "ref": v.ref,
            "id": v.id,
            "short_id": v.short_id,
            "created": iso(v.created),
            "author": v.author,
            "message": v.message,
        }
        doc["base"] = _brief(self.base)
        doc["merged_from"] = _brief(self.merged_from)
        return doc


def _brief(v: Version | None) -> dict[str, str] | None:
    return {"ref": v.ref, "id": v.id} if v is not None else None


@dataclass
class Blame:
    version: Version
    files: list[BlameEntry] = field(default_factory=list)
    tensors: list[BlameEntry] = field(default_factory=list)

    def tensor(self, name: str, path: str | None = None) -> BlameEntry:
        for e in self.tensors:
            if e.name == name and (path is None or e.path == path):
                return e
        raise KeyError(name)

    def file(self, path: str) -> BlameEntry:
        for e in self.files:
            if e.path == path:
                return e
        raise KeyError(path)

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.version.ref,
            "id": self.version.id,
            "files": [e.to_json() for e in self.files],
            "tensors": [e.to_json() for e in self.tensors],
        }


def blame_version(repo: Repository, version: Version, path: str | None = None) -> Blame:
    """Blame every file of ``version`` (or only ``path``) and every tensor in them."""
    files = [f for f in version.files if path is None or f.path == path]
    if path is not None and not files:
        listed = ", ".join(f.path for f in version.files[:10])
        raise UnknownRefError(f"{version.ref} has no file {path!r} (files: {listed})")

    # What we follow back: each file's digest and manifest, each tensor's fingerprint.
    file_digest = {f.path: f.digest for f in files}
    file_manifest = {f.path: f.manifest_id for f in files}
    wanted = {
        (f.path, name): ref.fingerprint
        for f in files
        for name, ref in T.file_tensors(repo, version, f.path).items()
    }
    file_owner = {p: version for p in file_digest}
    tensor_owner = {key: version for key in wanted}
    open_files, open_tensors = set(file_owner), set(tensor_owner)

    cur = version
    chain = _Chain(repo)
    while (open_files or open_tensors) and cur.parents:
        parent = chain.parent(cur)
        pfiles = {f.path: f for f in parent.files}
        for p in list(open_files):
            pf = pfiles.get(p)
            if pf is not None and pf.digest == file_digest[p]:
                file_owner[p] = parent
            else:
                open_files.discard(p)
        parent_tensors: dict[str, dict[str, T.TensorRef]] = {}
        for key in list(open_tensors):
            p, name = key
            pf = pfiles.get(p)
            if pf is not None and pf.manifest_id == file_manifest[p]:
                tensor_owner[key] = parent  # the same file: every tensor in it is the same
                continue
            if p not in parent_tensors:
                parent_tensors[p] = T.file_tensors(repo, parent, p) if pf else {}
            ref = parent_tensors[p].get(name)
            if ref is not None and ref.fingerprint == wanted[key]:
                tensor_owner[key] = parent
            else:
                open_tensors.discard(key)
        cur = parent

    # the base models and other merge parents the entries may name: loaded together
    owners = {v.id: v for v in [*file_owner.values(), *tensor_owner.values()]}.values()
    wanted_ids = {o.base for o in owners if o.base} | {p for o in owners for p in o.parents[1:]}
    loaded: dict[str, Version] = chain.load_many(wanted_ids)

    def load(vid: str) -> Version:
        if vid not in loaded:
            loaded[vid] = repo.version(vid)
        return loaded[vid]

    cache: dict[tuple[str, str], dict[str, T.TensorRef]] = {}

    def tensors_of(v: Version, p: str) -> dict[str, T.TensorRef]:
        if (v.id, p) not in cache:
            cache[(v.id, p)] = T.file_tensors(repo, v, p)
        return cache[(v.id, p)]

    def base_of(v: Version) -> Version | None:
        return load(v.base) if v.base else None

    def merged_from(v: Version, p: str, name: str | None, same) -> Version | None:
        for pid in v.parents[1:]:
            other = load(pid)
            if name is None:
                hit = any(f.path == p and same(f) for f in other.files)
            else:
                ref = tensors_of(other, p).get(name)
                hit = ref is not None and same(ref)
            if hit:
                return other
        return None

    out = Blame(version)
    for f in files:
        owner = file_owner[f.path]
        b = base_of(owner)
        same = b is not None and any(bf.path == f.path and bf.digest == f.digest for bf in b.files)
        via = merged_from(owner, f.path, None, lambda x, f=f: x.digest == f.digest)
        out.files.append(BlameEntry(f.path, None, owner, b if same else None, via))
    for (p, name), fp in wanted.items():
        owner = tensor_owner[(p, name)]
        b = base_of(owner)
        hit = _find_in_base(b, p, name, tensors_of) if b is not None else None
        same = hit is not None and hit.fingerprint == fp
        via = merged_from(owner, p, name, lambda r, fp=fp: r.fingerprint == fp)
        out.tensors.append(BlameEntry(p, name, owner, b if same else None, via))
    return out


class _Chain:
    """The first-parent history a blame walks, read a window at a time (8 versions, then 16,
    32…, with their files and manifests: a few statements per window, see
    :func:`tvc.registry.batch.first_parent_chain`) instead of a version per step."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.seen: dict[str, Version] = {}
        self.window = 8

    def parent(self, v: Version) -> Version:
        from tvc.registry import batch

        pid = v.parents[0]
        if pid not in self.seen:
            for w in batch.first_parent_chain(self.repo, pid, self.window):
                self.seen[w.id] = w
            self.window = min(self.window * 2, 4096)
        return self.seen.get(pid) or self.repo.version(pid)  # absent: its error

    def load_many(self, ids: set[str]) -> dict[str, Version]:
        from tvc.registry import batch

        missing = [i for i in ids if i not in self.seen]
        if missing:
            with self.repo.meta.read() as conn:
                found = batch.load_versions(conn, missing)
                self.repo.prefetch_manifests(
                    (fe.manifest_id for w in found.values() for fe in w.files),
                    versions=list(found),
                    conn=conn,
                )
            self.seen.update(found)
        return {i: self.seen[i] for i in ids if i in self.seen}


def _find_in_base(base: Version, path: str, name: str, tensors_of) -> T.TensorRef | None:
    """The same tensor in the base version: same file, else the one file that has that name."""
    hit = tensors_of(base, path).get(name)
    if hit is not None:
        return hit
    found = [tensors_of(base, f.path)[name] for f in base.files if name in tensors_of(base, f.path)]
    return found[0] if len(found) == 1 else None
