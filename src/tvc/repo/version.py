"""The ``Version`` record and its canonical encoding (which names it)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tvc.repo.manifest import canonical_json
from tvc.store import hashing


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    digest: str
    format: str
    manifest_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "digest": self.digest,
            "format": self.format,
            "manifest": self.manifest_id,
        }


@dataclass(frozen=True)
class Version:
    id: str
    model: str
    number: int
    message: str
    author: str
    created: float
    params: dict[str, Any]
    metrics: dict[str, Any]
    datasets: dict[str, Any]
    code: dict[str, Any] | None
    base: str | None
    parents: tuple[str, ...]
    state: str
    size: int
    files: tuple[FileEntry, ...] = field(default=(), compare=False)
    deleted: float | None = field(default=None, compare=False)  # `tvc rm`: when

    @property
    def ref(self) -> str:
        return f"{self.model}@v{self.number}"

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "version": self.number,
            "ref": self.ref,
            "message": self.message,
            "author": self.author,
            "created": iso(self.created),
            "parents": list(self.parents),
            "base": self.base,
            "params": self.params,
            "metrics": self.metrics,
            "datasets": self.datasets,
            "code": self.code,
            "state": self.state,
            "size": self.size,
            "files": [f.to_json() for f in self.files],
        }


def version_record(
    *,
    model: str,
    parents: list[str],
    files: list[FileEntry],
    message: str,
    author: str,
    created: float,
    params: dict[str, Any],
    metrics: dict[str, Any],
    datasets: dict[str, Any],
    code: dict[str, Any] | None,
    base: str | None,
) -> bytes:
    """The canonical encoding of a version: what its id hashes, and the record kept in the
    store (so the metadata DB can be rebuilt from packs). Metrics added after the commit are
    not part of it. Files are (path, manifest id): a rebuild takes their size, digest and
    format from the manifests, which are records in the store too."""
    doc = {
        "model": model,
        "parents": parents,
        "files": [[f.path, f.manifest_id] for f in files],
        "message": message,
        "author": author,
        "created": iso(created),
        "params": params,
        "metrics": metrics,
        "datasets": datasets,
        "code": code,
        "base": base,
    }
    return canonical_json(doc)


def version_id(**record: Any) -> str:
    """BLAKE3 of the canonical encoding (:func:`version_record`)."""
    return hashing.digest(version_record(**record))


def parse_version_record(raw: bytes) -> dict[str, Any]:
    """The fields of a stored version record (the inverse of :func:`version_record`, with file
    paths and manifest ids only: sizes and digests come from the manifests)."""
    doc = json.loads(raw)
    doc["created"] = dt.datetime.fromisoformat(doc["created"]).timestamp()
    return doc


def walk_history(start: Version, load: Callable[[str], Version], n: int | None) -> list[Version]:
    """Versions reachable from ``start`` through parents, newest first (by time, then number),
    at most ``n``: what ``tvc log`` lists. Deleted versions are left out, but the walk goes on
    through them to their parents. ``load``: a version by id (the caller's DB read)."""
    seen = {start.id}
    frontier = [start]
    out: list[Version] = []
    while frontier and (n is None or len(out) < n):
        frontier.sort(key=lambda v: (v.created, v.number))
        v = frontier.pop()
        if v.deleted is None:
            out.append(v)
        for p in v.parents:
            if p not in seen:
                seen.add(p)
                frontier.append(load(p))
    return out


def version_from_row(
    row: Any, model: str, parents: list[str], files: tuple[FileEntry, ...] = ()
) -> Version:
    """A ``Version`` from a ``versions`` table row (the one place that reads its columns):
    SQLAlchemy's rows, or any object with the columns as attributes (the cold read path's).

    Metrics added after the commit (``extra_metrics``) win over committed ones; the id covers
    only the committed ``metrics`` column.
    """
    return Version(
        id=row.id,
        model=model,
        number=row.number,
        message=row.message,
        author=row.author,
        created=row.created,
        params=row.params or {},
        metrics={**(row.metrics or {}), **(row.extra_metrics or {})},
        datasets=row.datasets or {},
        code=row.code,
        base=row.base,
        parents=tuple(parents),
        state=row.state,
        size=row.size,
        files=files,
        deleted=row.deleted,
    )
