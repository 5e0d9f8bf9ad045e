"""The ``Version`` record and its canonical encoding (which names it)."""

from __future__ import annotations

import datetime as dt
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


def version_id(
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
) -> str:
    """BLAKE3 of the canonical encoding. Metrics added after the commit are not part of it."""
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
    return hashing.digest(canonical_json(doc))
