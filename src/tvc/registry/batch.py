"""Batch reads for pages that show many versions at once (the web UI): each function is a fixed
number of SQL queries however many rows it returns, where the per-version API (``resolve``,
``load_version``, ``aliases``) would spend one or more queries on every row.

Plain functions over a registry, added beside the registry's own API; they read the same tables
with the same row decoding (:func:`tvc.repo.meta.version_from_row`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from tvc.repo import schema as s
from tvc.repo.meta import version_from_row
from tvc.repo.version import Version


def model_summaries(reg: Any) -> list[dict[str, Any]]:
    """Every model with its latest live version (number, state, message), its version count,
    its refs and its last change (a commit or any audited event), in three queries."""
    mo, v, r = s.models.c, s.versions.c, s.refs.c
    agg = (
        sa.select(
            v.model_id.label("mid"),
            sa.func.count().label("count"),
            sa.func.max(v.number).label("latest"),
            sa.func.max(v.created).label("updated"),
        )
        .where(v.deleted.is_(None))
        .group_by(v.model_id)
        .subquery()
    )
    q = (
        sa.select(mo.id, mo.name, agg.c.count, agg.c.updated, v.number, v.state, v.message, v.id)
        .join_from(s.models, agg, agg.c.mid == mo.id, isouter=True)
        .join(s.versions, sa.and_(v.model_id == mo.id, v.number == agg.c.latest), isouter=True)
        .where(mo.deleted.is_(None))
        .order_by(mo.name)
    )
    events = sa.union_all(
        *(
            sa.select(t.c.model_id, sa.func.max(t.c.at).label("at")).group_by(t.c.model_id)
            for t in (s.ref_events, s.state_events, s.metric_events)
        )
    ).subquery()
    with reg.meta.read() as conn:
        rows = conn.execute(q).all()
        refs: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
        for mid, kind, name, number in conn.execute(
            sa.select(r.model_id, r.kind, r.name, v.number)
            .join_from(s.refs, s.versions, r.version_id == v.id)
            .order_by(r.kind, r.name)
        ):
            refs[mid].append((kind, name, number))
        last_event = dict(
            conn.execute(
                sa.select(events.c.model_id, sa.func.max(events.c.at)).group_by(events.c.model_id)
            ).all()
        )
    out = []
    for mid, name, count, updated, number, state, message, vid in rows:
        changed = max(x for x in (updated, last_event.get(mid), 0.0) if x is not None)
        out.append(
            {
                "model": name,
                "versions": count or 0,
                "latest": f"v{number}" if number else None,
                "latest_id": vid,
                "state": state,
                "message": message,
                "changed": changed or None,
                "branches": [n for k, n, _ in refs[mid] if k == "branch"],
                "tags": [(n, f"v{num}") for k, n, num in refs[mid] if k == "tag"],
                "aliases": [(n, f"v{num}") for k, n, num in refs[mid] if k == "alias"],
            }
        )
    return out


def versions_page(
    reg: Any, model: str, *, offset: int = 0, limit: int = 100
) -> tuple[int, list[Version], dict[str, list[tuple[str, str]]]]:
    """``(total, versions, refs)``: one page of a model's live versions, newest number first,
    with their parents and the refs (kind, name) pointing at each — five queries per page."""
    v, p, r = s.versions.c, s.version_parents.c, s.refs.c
    with reg.meta.read() as conn:
        mid = reg.meta.model_id(conn, model)
        live = sa.and_(v.model_id == mid, v.deleted.is_(None))
        total = conn.execute(sa.select(sa.func.count()).where(live)).scalar_one()
        rows = conn.execute(
            sa.select(s.versions).where(live).order_by(v.number.desc()).offset(offset).limit(limit)
        ).all()
        ids = [row.id for row in rows]
        parents: dict[str, list[str]] = defaultdict(list)
        refs: dict[str, list[tuple[str, str]]] = defaultdict(list)
        if ids:
            for vid, parent in conn.execute(
                sa.select(p.version_id, p.parent_id)
                .where(p.version_id.in_(ids))
                .order_by(p.version_id, p.position)
            ):
                parents[vid].append(parent)
            for vid, kind, name in conn.execute(
                sa.select(r.version_id, r.kind, r.name)
                .where(r.model_id == mid, r.version_id.in_(ids))
                .order_by(r.kind, r.name)
            ):
                refs[vid].append((kind, name))
    versions = [version_from_row(row, model, parents.get(row.id, [])) for row in rows]
    return total, versions, dict(refs)


def new_bytes(reg: Any, versions: list[Version]) -> dict[str, int]:
    """For each version, the bytes of its files' chunks that its first parent's files lack
    (what the version added, before compression): two queries for the file rows and the
    manifests of the versions and their first parents, then set arithmetic on chunk ids."""
    f = s.version_files.c
    firsts = {v.id: v.parents[0] for v in versions if v.parents}
    ids = list({v.id for v in versions} | set(firsts.values()))
    files: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with reg.meta.read() as conn:
        for i in range(0, len(ids), 500):
            for vid, path, manifest in conn.execute(
                sa.select(f.version_id, f.path, f.manifest_id).where(
                    f.version_id.in_(ids[i : i + 500])
                )
            ):
                files[vid].append((path, manifest))
    reg.prefetch_manifests(m for rows in files.values() for _, m in rows)
    out: dict[str, int] = {}
    for v in versions:
        before = {m for _, m in files.get(firsts.get(v.id, ""), [])}
        old_chunks: set[str] | None = None
        total = 0
        for _path, m in files.get(v.id, []):
            if m in before:
                continue  # the same file as in the parent: nothing new
            if old_chunks is None:
                old_chunks = {c for pm in before for c, _n in reg.manifest(pm).chunks}
            total += sum(n for c, n in reg.manifest(m).chunks if c not in old_chunks)
        out[v.id] = total
    return out


def metric_series(reg: Any, model: str) -> list[tuple[int, str, dict[str, Any]]]:
    """``(number, id, metrics)`` of every live version of a model, oldest first, metrics added
    later winning over committed ones — one query (the data of a metric chart)."""
    v = s.versions.c
    with reg.meta.read() as conn:
        mid = reg.meta.model_id(conn, model)
        rows = conn.execute(
            sa.select(v.number, v.id, v.metrics, v.extra_metrics)
            .where(v.model_id == mid, v.deleted.is_(None))
            .order_by(v.number)
        ).all()
    return [(n, vid, {**(m or {}), **(extra or {})}) for n, vid, m, extra in rows]
