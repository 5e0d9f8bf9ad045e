"""The audit trail: every recorded change of a model, newest first, from one place.

It merges the append-only logs: ``ref_events`` (alias moves and rollbacks, tags, branch creation
and deletion), ``state_events`` (lifecycle transitions) and ``metric_events`` (metrics added
after the commit). It answers "which version was in production when, who put it there, and
why" without joining anything by hand.

The merge is one SQL statement (a ``UNION ALL`` of the three logs, ordered by time, filtered and
paged in the database): a page of the web UI over 10,000 entries reads one page of rows, not the
whole log. Ties in time keep the order the old Python merge gave them: ref events, then state
events, then metric events, each in the order they were recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from tvc.repo import schema as s
from tvc.repo.version import iso

# The union's arms, in the order ties in time are broken (the old merge's order).
REF, STATE, METRICS = 0, 1, 2


# The columns after (src, id, at, actor, model_id), each with the type of the NULL an arm that
# lacks it gives (a union's arms must agree, and PostgreSQL wants typed NULLs).
_COLUMNS = (
    ("kind", sa.String(16)),
    ("name", sa.String(255)),
    ("va", sa.String(64)),
    ("vb", sa.String(64)),
    ("old_state", sa.String(32)),
    ("new_state", sa.String(32)),
    ("metrics", sa.JSON),
    ("previous", sa.JSON),
    ("reason", sa.Text),
    ("forced", sa.Boolean),
    ("rollback", sa.Boolean),
    ("overridden", sa.Text),
)


def _arm(src: int, table: sa.Table, **given: Any) -> sa.Select:
    """One log as an arm of the union: its own columns where it has them, NULL elsewhere."""
    c = table.c
    return sa.select(
        sa.literal(src).label("src"),
        c.id,
        c.at,
        c.actor,
        c.model_id,
        *(
            (given[name] if name in given else sa.cast(sa.null(), type_)).label(name)
            for name, type_ in _COLUMNS
        ),
    )


def _events(
    mid: Any,  # a model id, a subquery giving one, or None (every model)
    *,
    kind: str | None = None,
    actor: str | None = None,
    version: str | None = None,
) -> sa.Subquery:
    """The three logs as one relation with aligned columns; ``va``/``vb`` are the versions an
    entry names (a ref move's old/new target; the version of a state or metrics entry)."""
    re, se, me = s.ref_events.c, s.state_events.c, s.metric_events.c
    never = sa.false()
    refs = _arm(
        REF,
        s.ref_events,
        kind=re.kind,
        name=re.name,
        va=re.old_version,
        vb=re.new_version,
        reason=re.reason,
        forced=re.forced,
        rollback=re.rollback,
    )
    states = _arm(
        STATE,
        s.state_events,
        kind=sa.literal("state", sa.String(16)),
        va=se.version_id,
        old_state=se.old_state,
        new_state=se.new_state,
        reason=se.reason,
        forced=se.forced,
        rollback=never,
        overridden=se.overridden,
    )
    metrics = _arm(
        METRICS,
        s.metric_events,
        kind=sa.literal("metrics", sa.String(16)),
        va=me.version_id,
        metrics=me.metrics,
        previous=me.previous,
        reason=me.reason,
        forced=never,
        rollback=never,
    )
    arms = []
    for arm, t, k in ((refs, re, None), (states, se, "state"), (metrics, me, "metrics")):
        if kind is not None:
            if k is None:
                arm = arm.where(re.kind == kind)
            elif k != kind:
                continue
        if mid is not None:
            arm = arm.where(t.model_id == mid)
        if actor is not None:
            arm = arm.where(t.actor == actor)
        if version is not None:
            if k is None:
                arm = arm.where(sa.or_(re.old_version == version, re.new_version == version))
            else:
                arm = arm.where(t.version_id == version)
        arms.append(arm)
    if not arms:  # a kind no log has: an empty relation of the same shape
        arms.append(refs.where(sa.false()))
    return (sa.union_all(*arms) if len(arms) > 1 else arms[0]).subquery("events")


class AuditMixin:
    """``audit`` and ``audit_facets`` for ModelRegistry."""

    def audit(
        self,
        model: str | None = None,
        limit: int | None = None,
        *,
        offset: int = 0,
        kind: str | None = None,
        actor: str | None = None,
        version: str | None = None,
        models: Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Entries ``{at, actor, model, kind, name, from, to, reason, forced}``, newest first.

        ``kind``: alias, tag, branch (``name`` is the ref; from/to are versions), state
        (``name`` is the version; from/to are states), metrics (``to`` holds the values set,
        ``from`` what those keys held before).

        Filters and paging run in SQL, in one statement: ``kind``, ``actor``, ``version`` (a
        version id: the entries that name it), ``models`` (only these model names — what a
        token may read), ``limit``/``offset``.
        """
        with self.meta.read() as conn:
            mid = self.meta.model_id(conn, model) if model is not None else None
            return audit_page(
                conn,
                mid,
                limit=limit,
                offset=offset,
                kind=kind,
                actor=actor,
                version=version,
                models=models,
            )

    def audit_facets(self, model: str | None = None) -> list[tuple[str, str, str, int]]:
        """``(model, kind, actor, entries)`` for every combination the audit log holds (of one
        model, or all): the choices of the audit page's filters and its totals, in one query."""
        with self.meta.read() as conn:
            mid = self.meta.model_id(conn, model) if model is not None else None
            return audit_facets(conn, mid)


def audit_page(
    conn: sa.Connection,
    mid: Any,  # a model id, a subquery giving one, or None (every model)
    *,
    limit: int | None = None,
    offset: int = 0,
    kind: str | None = None,
    actor: str | None = None,
    version: str | None = None,
    models: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """:meth:`AuditMixin.audit` inside a caller's read transaction (model given by id)."""
    u = _events(mid, kind=kind, actor=actor, version=version)
    mo, va, ma, vb, mb = (
        s.models.alias("mo"),
        s.versions.alias("va"),
        s.models.alias("ma"),
        s.versions.alias("vb"),
        s.models.alias("mb"),
    )

    def named(v: sa.Alias, col: Any) -> Any:
        # as before: with a model given, only that model's versions are named
        return sa.and_(v.c.id == col, v.c.model_id == mid) if mid is not None else v.c.id == col

    q = (
        sa.select(
            u,
            mo.c.name.label("model_name"),
            ma.c.name.label("a_model"),
            va.c.number.label("a_num"),
            mb.c.name.label("b_model"),
            vb.c.number.label("b_num"),
        )
        .select_from(
            u.outerjoin(mo, mo.c.id == u.c.model_id)
            .outerjoin(va, named(va, u.c.va))
            .outerjoin(ma, ma.c.id == va.c.model_id)
            .outerjoin(vb, named(vb, u.c.vb))
            .outerjoin(mb, mb.c.id == vb.c.model_id)
        )
        .order_by(u.c.at.desc(), u.c.src, u.c.id)
    )
    if models is not None:
        q = q.where(mo.c.name.in_(list(models)))
    if limit is not None:
        q = q.limit(limit)
    if offset:
        q = q.offset(offset)
    out = []
    for r in conn.execute(q):
        a = f"{r.a_model}@v{r.a_num}" if r.a_model is not None else None
        b = f"{r.b_model}@v{r.b_num}" if r.b_model is not None else None
        e: dict[str, Any] = {"at": iso(r.at), "actor": r.actor, "model": r.model_name}
        e["kind"] = r.kind
        if r.src == REF:
            e.update({"name": r.name, "from": a, "to": b, "reason": r.reason})
            e.update(forced=bool(r.forced), rollback=bool(r.rollback))
        elif r.src == STATE:
            e.update({"name": a, "from": r.old_state, "to": r.new_state, "reason": r.reason})
            e.update(forced=bool(r.forced), overridden=r.overridden)
        else:
            e.update({"name": a, "from": r.previous, "to": r.metrics, "reason": r.reason})
            e.update(forced=False)
        out.append(e)
    return out


def audit_facets(conn: sa.Connection, mid: Any) -> list[tuple[str, str, str, int]]:
    u = _events(mid)
    mo = s.models.c
    q = (
        sa.select(mo.name, u.c.kind, u.c.actor, sa.func.count())
        .join_from(u, s.models, mo.id == u.c.model_id)
        .group_by(mo.name, u.c.kind, u.c.actor)
        .order_by(mo.name, u.c.kind, u.c.actor)
    )
    return [(m, k, a, n) for m, k, a, n in conn.execute(q)]
