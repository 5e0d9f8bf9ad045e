"""Batch reads for pages that show many versions at once (the web UI): each function is a fixed
number of SQL queries however many rows it returns, where the per-version API (``resolve``,
``load_version``, ``aliases``) would spend one or more queries on every row.

Plain functions over a registry, added beside the registry's own API; they read the same tables
with the same row decoding (:func:`tvc.repo.meta.version_from_row`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from tvc.registry.aliases import ref_rows
from tvc.registry.audit import audit_facets, audit_page
from tvc.registry.lineage import Lineage, ancestry, lineage_of
from tvc.repo import names
from tvc.repo import schema as s
from tvc.repo.meta import load_versions, version_from_row
from tvc.repo.version import FileEntry, Version


def model_summaries(reg: Any) -> list[dict[str, Any]]:
    """Every model with its latest live version (number, state, message), its version count,
    its refs and its last change (a commit or any audited event), in two statements."""
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
    logs = sa.union_all(
        *(
            sa.select(t.c.model_id, sa.func.max(t.c.at).label("at")).group_by(t.c.model_id)
            for t in (s.ref_events, s.state_events, s.metric_events)
        )
    ).subquery()
    events = (
        sa.select(logs.c.model_id, sa.func.max(logs.c.at).label("at"))
        .group_by(logs.c.model_id)
        .subquery()
    )
    q = (
        sa.select(
            mo.id,
            mo.name,
            agg.c.count,
            agg.c.updated,
            v.number,
            v.state,
            v.message,
            v.id,
            events.c.at,
        )
        .join_from(s.models, agg, agg.c.mid == mo.id, isouter=True)
        .join(s.versions, sa.and_(v.model_id == mo.id, v.number == agg.c.latest), isouter=True)
        .join(events, events.c.model_id == mo.id, isouter=True)
        .where(mo.deleted.is_(None))
        .order_by(mo.name)
    )
    with reg.meta.read() as conn:
        rows = conn.execute(q).all()
        refs: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
        for mid, kind, name, number in conn.execute(
            sa.select(r.model_id, r.kind, r.name, v.number)
            .join_from(s.refs, s.versions, r.version_id == v.id)
            .order_by(r.kind, r.name)
        ):
            refs[mid].append((kind, name, number))
    out = []
    for mid, name, count, updated, number, state, message, vid, last_event in rows:
        changed = max(x for x in (updated, last_event, 0.0) if x is not None)
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


def parents_column() -> Any:
    """A version row's parents as one string (``position:id`` pairs, in no set order): a
    correlated aggregate, so a page of rows brings its parents along in the same statement —
    ``LIMIT`` still counts versions, where a join to ``version_parents`` would count pairs."""
    p = s.version_parents.c
    pair = sa.cast(p.position, sa.String) + sa.literal(":") + p.parent_id
    return (
        sa.select(sa.func.aggregate_strings(pair, " "))
        .where(p.version_id == s.versions.c.id)
        .scalar_subquery()
        .label("parent_list")
    )


def split_parents(text: str | None) -> list[str]:
    pairs = [item.split(":", 1) for item in (text or "").split()]
    return [vid for _pos, vid in sorted(pairs, key=lambda pv: int(pv[0]))]


def versions_page(
    reg: Any, model: str, *, offset: int = 0, limit: int = 100, conn: sa.Connection | None = None
) -> tuple[int, list[Version], dict[str, list[tuple[str, str]]]]:
    """``(total, versions, refs)``: one page of a model's live versions, newest number first,
    with their parents and the refs (kind, name) pointing at each — four statements."""
    if conn is None:
        with reg.meta.read() as c:
            return versions_page(reg, model, offset=offset, limit=limit, conn=c)
    v = s.versions.c
    mid = reg.meta.model_id(conn, model)
    live = sa.and_(v.model_id == mid, v.deleted.is_(None))
    total = conn.execute(sa.select(sa.func.count()).where(live)).scalar_one()
    versions = _page(conn, model, live, offset, limit)
    _aliases, refs = ref_rows(conn, mid, model, [x.id for x in versions])
    return total, versions, refs


def _page(conn: sa.Connection, model: str, live: Any, offset: int, limit: int) -> list[Version]:
    v = s.versions.c
    rows = conn.execute(
        sa.select(s.versions, parents_column())
        .where(live)
        .order_by(v.number.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return [version_from_row(row, model, split_parents(row.parent_list)) for row in rows]


@dataclass
class ModelView:
    """What the model page shows, read in one transaction (see :func:`model_view`)."""

    total: int
    versions: list[Version]
    refs: dict[str, list[tuple[str, str]]]
    aliases: list[dict[str, Any]]
    series: list[tuple[int, str, dict[str, Any]]]
    new: dict[str, int]


def model_view(reg: Any, model: str, *, offset: int = 0, limit: int = 100) -> ModelView:
    """One page of a model's versions (parents, refs, bytes new), its aliases with their last
    move, and every live version's metrics (the charts; their count is the total) — five
    statements, six when manifests must be loaded, however many versions, aliases, tags or
    files the model has."""
    v, mo = s.versions.c, s.models.c
    names.check_model_name(model)
    # the model's id as a subquery of each statement, not a statement of its own
    mid: Any = sa.select(mo.id).where(mo.name == model, mo.deleted.is_(None)).scalar_subquery()
    with reg.meta.read() as conn:
        series = metric_series(reg, model, conn=conn, mid=mid)
        if not series:  # no live version: an empty model, or none (which says so)
            mid = reg.meta.model_id(conn, model)
        live = sa.and_(v.model_id == mid, v.deleted.is_(None))
        versions = _page(conn, model, live, offset, limit)
        aliases, refs = ref_rows(conn, mid, model, [x.id for x in versions])
        new = new_bytes(reg, versions, conn=conn)
    return ModelView(len(series), versions, refs, aliases, series, new)


def new_bytes(
    reg: Any, versions: list[Version], *, conn: sa.Connection | None = None
) -> dict[str, int]:
    """For each version, the bytes of its files' chunks that its first parent's files lack
    (what the version added, before compression): one statement for the file rows of the
    versions and their first parents, one for the manifests not in the cache yet, then set
    arithmetic on chunk ids."""
    if conn is None:
        with reg.meta.read() as c:
            return new_bytes(reg, versions, conn=c)
    f = s.version_files.c
    firsts = {v.id: v.parents[0] for v in versions if v.parents}
    ids = list({v.id for v in versions} | set(firsts.values()))
    files: dict[str, list[tuple[str, str]]] = defaultdict(list)
    if ids:
        for vid, path, manifest in conn.execute(
            sa.select(f.version_id, f.path, f.manifest_id).where(f.version_id.in_(ids))
        ):
            files[vid].append((path, manifest))
    reg.prefetch_manifests((m for rows in files.values() for _, m in rows), versions=ids, conn=conn)
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


def metric_series(
    reg: Any, model: str, *, conn: sa.Connection | None = None, mid: Any = None
) -> list[tuple[int, str, dict[str, Any]]]:
    """``(number, id, metrics)`` of every live version of a model, oldest first, metrics added
    later winning over committed ones — one query (the data of a metric chart)."""
    if conn is None:
        with reg.meta.read() as c:
            return metric_series(reg, model, conn=c)
    v = s.versions.c
    if mid is None:
        mid = reg.meta.model_id(conn, model)
    rows = conn.execute(
        sa.select(v.number, v.id, v.metrics, v.extra_metrics)
        .where(v.model_id == mid, v.deleted.is_(None))
        .order_by(v.number)
    ).all()
    return [(n, vid, {**(m or {}), **(extra or {})}) for n, vid, m, extra in rows]


def resolve_id(reg: Any, conn: sa.Connection, ref: str) -> str:
    """The id of the version ``ref`` names, in one statement for the usual ref (``MODEL@vN``,
    a branch, tag or alias, an id prefix): the model and every candidate in one query.
    Anything else — ``~N``, no or several candidates, a deleted model — goes through
    ``resolve``, which says what is wrong (or walks the ancestors)."""
    r = names.parse_ref(ref)
    mo, v, rc = s.models.c, s.versions.c, s.refs.c
    arms = []
    m = names.VERSION_RE.match(r.rev)
    if m:
        number = int(m.group(1))
        if number < 2**62:
            arms.append(sa.select(v.model_id, v.id.label("vid")).where(v.number == number))
    else:
        arms.append(sa.select(rc.model_id, rc.version_id.label("vid")).where(rc.name == r.rev))
        if names.ID_PREFIX_RE.match(r.rev):
            arms.append(
                sa.select(v.model_id, v.id.label("vid")).where(
                    v.id.startswith(r.rev), v.deleted.is_(None)
                )
            )
    if r.ancestors or not arms:
        return reg.resolve(r, conn).id
    cand = (sa.union_all(*arms) if len(arms) > 1 else arms[0]).subquery()
    rows = conn.execute(
        sa.select(mo.deleted, cand.c.vid)
        .join_from(s.models, cand, cand.c.model_id == mo.id, isouter=True)
        .where(mo.name == r.model)
    ).all()
    found = {vid for deleted, vid in rows if deleted is None and vid is not None}
    if len(rows) != len(found) or len(found) != 1:
        return reg.resolve(r, conn).id
    return found.pop()


def files_with_manifests(reg: Any, conn: sa.Connection, vid: str) -> tuple[FileEntry, ...]:
    """A version's files, their manifests joined in the same statement (decoded into the
    registry's cache unless there already): the version page shows every file's tensors, so
    it needs them all, and one statement reads them however many files there are."""
    f, m = s.version_files.c, s.manifests.c
    files = []
    for path, size, digest, fmt, manifest_id, body in conn.execute(
        sa.select(f.path, f.size, f.digest, f.format, f.manifest_id, m.body)
        .join_from(s.version_files, s.manifests, m.id == f.manifest_id, isouter=True)
        .where(f.version_id == vid)
        .order_by(f.path)
    ):
        files.append(FileEntry(path, size, digest, fmt, manifest_id))
        if body is not None:
            reg.cache_manifest(manifest_id, body)
    return tuple(files)


@dataclass
class VersionView:
    """What the version page shows, read in one transaction (see :func:`version_view`)."""

    version: Version
    committed: dict[str, Any]
    lineage: Lineage
    known: dict[str, Version]  # the versions of the lineage graph, by id
    aliases: list[dict[str, Any]]
    refs: list[tuple[str, str]]
    audit: list[dict[str, Any]]


def version_view(reg: Any, ref: str, *, depth: int = 3) -> VersionView:
    """One version with its files (their manifests cached), its lineage ``depth`` levels deep
    (parents and base models included), the model's aliases, the refs pointing at it and the
    audit entries that name it — five statements, six when manifests must be loaded, whatever
    the number of files, tensors, aliases, audit entries or the depth of the history.
    The ref is resolved once."""
    with reg.meta.read() as conn:
        vid = resolve_id(reg, conn, ref)
        rows: dict[str, Any] = {}
        known = ancestry(conn, {vid: 0}, depth, rows)
        root = known.get(vid)
        if root is None or root.deleted is not None:
            root = reg.resolve(ref, conn)  # raises: deleted (or gone meanwhile)
        v = replace(root, files=files_with_manifests(reg, conn, vid))
        known[vid] = v
        graph = lineage_of(conn, v, depth, known=known)
        mid = rows[vid].model_id
        aliases, refs = ref_rows(conn, mid, v.model, [vid])
        audit = audit_page(conn, mid, version=vid)
    committed = rows[vid].metrics or {}
    return VersionView(v, committed, graph, known, aliases, refs.get(vid, []), audit)


@dataclass
class AuditView:
    """What the audit page shows (see :func:`audit_view`)."""

    facets: list[tuple[str, str, str, int]]  # (model, kind, actor, entries) the viewer may read
    total: int  # entries that match the filters
    entries: list[dict[str, Any]]  # the page


def audit_view(
    reg: Any,
    model: str | None,
    *,
    kind: str | None = None,
    actor: str | None = None,
    offset: int = 0,
    limit: int = 200,
    may_read: Callable[[str], bool] = lambda _m: True,
) -> AuditView:
    """One page of the audit log and the choices of its filters: two statements (the grouped
    facets — which also give the totals — and the page, filtered, ordered and paged in SQL),
    however long the log is. ``may_read``: which models the viewer may
    see (a server token's); entries of others are neither counted nor shown."""
    mid: Any = None
    if model is not None:  # its id as a subquery; looked up only when nothing matches
        names.check_model_name(model)
        mo = s.models.c
        mid = sa.select(mo.id).where(mo.name == model, mo.deleted.is_(None)).scalar_subquery()
    with reg.meta.read() as conn:
        every = audit_facets(conn, mid)
        if model is not None and not every:
            mid = reg.meta.model_id(conn, model)  # unknown: says so; else an empty log
        facets = [f for f in every if may_read(f[0])]
        total = sum(n for _m, k, a, n in facets if kind in (None, k) and actor in (None, a))
        readable = None if mid is not None or len(facets) == len(every) else {f[0] for f in facets}
        entries = audit_page(
            conn, mid, limit=limit, offset=offset, kind=kind, actor=actor, models=readable
        )
    return AuditView(facets, total, entries)


def first_parent_chain(reg: Any, start: str, n: int) -> list[Version]:
    """``start`` and up to ``n - 1`` of its first-parent ancestors, newest first, with files and
    their manifests cached — the versions of a recursive CTE's chain in one statement, their
    files in one, the manifests the cache lacks in one: what a blame walk reads, a window at a
    time."""
    p = s.version_parents.c
    anchor = sa.select(
        sa.cast(sa.literal(start), sa.Text).label("id"),
        sa.cast(sa.literal(1), sa.Integer).label("k"),
    )
    walk = anchor.cte("chain", recursive=True)
    step = (
        sa.select(sa.cast(p.parent_id, sa.Text), sa.cast(walk.c.k + 1, sa.Integer))
        .join_from(walk, s.version_parents, sa.and_(p.version_id == walk.c.id, p.position == 0))
        .where(walk.c.k < n)
    )
    walk = walk.union_all(step)
    with reg.meta.read() as conn:
        found = load_versions(conn, sa.select(walk.c.id))
        reg.prefetch_manifests(
            (fe.manifest_id for v in found.values() for fe in v.files),
            versions=list(found),
            conn=conn,
        )
    out, vid = [], start
    while vid in found and len(out) < n:
        out.append(found[vid])
        vid = found[vid].parents[0] if found[vid].parents else None
    return out


def versions_for(reg: Any, refs: list[str]) -> list[Version]:
    """Several refs resolved once each and loaded with their files and manifests (the compare
    page's two versions): one read, a statement per ref and three for all of them together."""
    with reg.meta.read() as conn:
        ids = [resolve_id(reg, conn, ref) for ref in refs]
        found = load_versions(conn, ids)
        reg.prefetch_manifests(
            (fe.manifest_id for v in found.values() for fe in v.files), versions=ids, conn=conn
        )
        out = []
        for ref, vid in zip(refs, ids, strict=True):
            v = found.get(vid)
            if v is None or v.deleted is not None:
                v = reg.resolve(ref, conn)  # says why (deleted, or gone meanwhile)
            out.append(v)
    return out
