"""Lineage: what a version was made from, as a graph.

Nodes are versions (keyed by id), data sets (``dataset:DIGEST`` or ``dataset:ID``) and code
commits (``code:SHA``). Edges point from a version to its inputs: ``parent`` (in order; a merge
has two), ``base`` (the model it was fine-tuned from), ``dataset`` (named), ``code``. Versions
are followed recursively — parents, base models and versions of stored data sets — up to
``depth`` levels (None: all); a version whose inputs were cut off is listed in ``truncated``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tvc.errors import UsageError
from tvc.repo.version import Version, iso


@dataclass
class Lineage:
    root: str
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[dict[str, Any]] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)

    def inputs(self, key: str) -> list[dict[str, Any]]:
        """Edges out of ``key`` (its inputs), in recording order."""
        return [e for e in self.edges if e["from"] == key]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "nodes": [{"key": k, **v} for k, v in self.nodes.items()],
            "edges": self.edges,
            "truncated": self.truncated,
        }


def _version_node(v: Version) -> dict[str, Any]:
    return {
        "kind": "version",
        "id": v.id,
        "ref": v.ref,
        "model": v.model,
        "state": v.state,
        "message": v.message,
        "author": v.author,
        "created": iso(v.created),
    }


class LineageMixin:
    """``lineage`` for ModelRegistry."""

    def lineage(self, ref: str, depth: int | None = None) -> Lineage:
        """The graph of ``ref``'s inputs, ``depth`` version levels deep (None: all)."""
        if depth is not None and depth < 0:
            raise UsageError(f"--depth must be ≥ 0, got {depth}")
        with self.meta.read() as conn:
            root = self.resolve(ref, conn)
            graph = Lineage(root.id)
            graph.nodes[root.id] = _version_node(root)
            frontier = [(root, 0)]
            expanded: set[str] = set()
            while frontier:
                v, level = frontier.pop(0)
                if v.id in expanded:
                    continue
                expanded.add(v.id)
                has_inputs = bool(v.parents or v.base or v.datasets or v.code)
                if depth is not None and level >= depth:
                    if has_inputs:
                        graph.truncated.append(v.id)
                    continue

                def add_version(vid: str, kind: str, name: str | None, level=level, src=v, **more):
                    w = self.meta.load_version(conn, vid, files=False)
                    graph.nodes.setdefault(w.id, _version_node(w))
                    edge = {"from": src.id, "to": w.id, "kind": kind, "name": name, **more}
                    graph.edges.append(edge)
                    frontier.append((w, level + 1))

                for i, p in enumerate(v.parents):
                    add_version(p, "parent", "first" if i == 0 else f"#{i + 1}")
                if v.base:
                    add_version(v.base, "base", None)
                for name, d in (v.datasets or {}).items():
                    d = d if isinstance(d, dict) else {"id": str(d)}
                    if d.get("version_id"):
                        add_version(d["version_id"], "dataset", name, record=d)
                        continue
                    key = f"dataset:{d.get('digest') or d.get('id') or name}"
                    graph.nodes.setdefault(key, {"kind": "dataset", "name": name, **d})
                    graph.edges.append({"from": v.id, "to": key, "kind": "dataset", "name": name})
                if v.code:
                    dirty = "+dirty" if v.code.get("dirty") else ""
                    key = f"code:{v.code.get('commit')}{dirty}"
                    graph.nodes.setdefault(key, {"kind": "code", **v.code})
                    graph.edges.append({"from": v.id, "to": key, "kind": "code", "name": None})
        return graph
