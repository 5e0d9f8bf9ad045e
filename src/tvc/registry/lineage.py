"""Lineage: what a version was made from, as a graph.

Nodes are versions (keyed by id), data sets (``dataset:DIGEST`` or ``dataset:ID``) and code
commits (``code:SHA``). Edges point from a version to its inputs: ``parent`` (in order; a merge
has two), ``base`` (the model it was fine-tuned from), ``dataset`` (named), ``code``. Versions
are followed recursively — parents, base models and versions of stored data sets — up to
``depth`` levels (None: all); a version whose inputs were cut off is listed in ``truncated``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tvc.errors import UnknownRefError, UsageError
from tvc.repo import schema as s
from tvc.repo.meta import load_versions
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


def ancestry(
    conn: sa.Connection,
    roots: dict[str, int],
    depth: int | None,
    rows_out: dict[str, Any] | None = None,
) -> dict[str, Version]:
    """Every version within ``depth`` levels of ``roots`` ({id: level}) through parents and base
    models, loaded (without files) by ONE statement: a recursive CTE that walks the edges,
    joined to the version rows and their parents. Levels are what the walk needs to stop; the
    result is a superset of what the graph shows, never a version per query. ``rows_out``
    receives the ``versions`` rows themselves (committed metrics, model id)."""
    # typed alike in both terms (PostgreSQL insists): text ids, integer levels
    anchors = [
        sa.select(
            sa.cast(sa.literal(vid), sa.Text).label("id"),
            sa.cast(sa.literal(lvl), sa.Integer).label("level"),
        )
        for vid, lvl in roots.items()
    ]
    anchor = sa.union_all(*anchors) if len(anchors) > 1 else anchors[0]
    walk = anchor.cte("walk", recursive=True)
    # one row per input of a walked version: slot 0 its parents (one row each), slot 1 its base
    # (on the row of its first parent, or its only row) — primary-key lookups, no edge table
    slot = sa.union_all(sa.select(sa.literal(0).label("k")), sa.select(sa.literal(1))).subquery()
    pv, pp = s.versions.alias("pv"), s.version_parents.alias("pp")
    first = sa.or_(pp.c.position.is_(None), pp.c.position == 0)
    dst = sa.case((slot.c.k == 0, pp.c.parent_id), (first, pv.c.base), else_=sa.null())
    # without a depth the level does not matter: kept at 0, UNION then visits each version
    # once (with levels, a history of many merges reaches a version at many levels)
    level = walk.c.level + 1 if depth is not None else walk.c.level
    step = (
        sa.select(sa.cast(dst, sa.Text), sa.cast(level, sa.Integer))
        .select_from(walk)
        .join(pv, pv.c.id == walk.c.id)
        .join(slot, sa.true())
        .outerjoin(pp, pp.c.version_id == pv.c.id)
        .where(dst.is_not(None))
    )
    if depth is not None:
        step = step.where(walk.c.level < depth)
    walk = walk.union(step)
    return load_versions(conn, sa.select(walk.c.id), files=False, rows_out=rows_out)


def _dataset_inputs(v: Version) -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, d if isinstance(d, dict) else {"id": str(d)})
        for name, d in (v.datasets or {}).items()
    ]


def build_graph(root: Version, depth: int | None, load: Callable[[str], Version]) -> Lineage:
    """The graph, breadth first from ``root``; ``load`` gives a version by id (raising
    UnknownRefError for one the registry lacks)."""
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
            w = load(vid)
            graph.nodes.setdefault(w.id, _version_node(w))
            edge = {"from": src.id, "to": w.id, "kind": kind, "name": name, **more}
            graph.edges.append(edge)
            frontier.append((w, level + 1))

        for i, p in enumerate(v.parents):
            add_version(p, "parent", "first" if i == 0 else f"#{i + 1}")
        if v.base:
            add_version(v.base, "base", None)
        for name, d in _dataset_inputs(v):
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


def lineage_of(
    conn: sa.Connection,
    root: Version,
    depth: int | None,
    known: dict[str, Version] | None = None,
) -> Lineage:
    """:meth:`LineageMixin.lineage` of a resolved version inside a caller's transaction.

    Parents and base models are walked in SQL (:func:`ancestry`, one statement). A data set
    stored as a version is named inside the ``datasets`` JSON, which the walk does not read:
    the versions such edges reach are loaded by one more walk for all of them at once — a
    statement per hop from a model into its stored data sets, not per version or level.
    ``known``: the versions :func:`ancestry` already loaded for this root and depth."""
    known = dict(known) if known is not None else ancestry(conn, {root.id: 0}, depth)
    known[root.id] = root
    while True:
        missing: dict[str, int] = {}
        # which stored data sets does the graph reach, at what level? (a dry run of the walk)
        levels = _levels(root, depth, known)
        for vid, level in levels.items():
            for _name, d in _dataset_inputs(known[vid]):
                w = d.get("version_id")
                if w and w not in known:
                    missing[w] = min(missing.get(w, level + 1), level + 1)
        if not missing:
            return build_graph(root, depth, lambda vid: _known(known, vid))
        found = ancestry(conn, missing, depth)
        if not found.keys() - known.keys():
            return build_graph(root, depth, lambda vid: _known(known, vid))
        known.update(found)


def _known(known: dict[str, Version], vid: str) -> Version:
    try:
        return known[vid]
    except KeyError:
        raise UnknownRefError(f"no version {vid}") from None


def _levels(root: Version, depth: int | None, known: dict[str, Version]) -> dict[str, int]:
    """The level at which the breadth-first walk expands each known version (those it would
    expand: below ``depth``)."""
    out: dict[str, int] = {}
    frontier = [(root.id, 0)]
    while frontier:
        vid, level = frontier.pop(0)
        if vid in out or vid not in known:
            continue
        if depth is not None and level >= depth:
            continue
        out[vid] = level
        v = known[vid]
        nxt = [*v.parents, *([v.base] if v.base else [])]
        nxt += [d["version_id"] for _n, d in _dataset_inputs(v) if d.get("version_id")]
        frontier.extend((w, level + 1) for w in nxt)
    return out


class LineageMixin:
    """``lineage`` for ModelRegistry."""

    def lineage(self, ref: str, depth: int | None = None) -> Lineage:
        """The graph of ``ref``'s inputs, ``depth`` version levels deep (None: all)."""
        if depth is not None and depth < 0:
            raise UsageError(f"--depth must be ≥ 0, got {depth}")
        with self.meta.read() as conn:
            return lineage_of(conn, self.resolve(ref, conn), depth)
