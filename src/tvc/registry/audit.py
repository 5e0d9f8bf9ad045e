"""The audit trail: every recorded change of a model, newest first, from one place.

It merges the append-only logs: ``ref_events`` (alias moves and rollbacks, tags, branch creation
and deletion), ``state_events`` (lifecycle transitions) and ``metric_events`` (metrics added
after the commit). It answers "which version was in production when, who put it there, and
why" without joining anything by hand.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tvc.repo import schema as s
from tvc.repo.version import iso


class AuditMixin:
    """``audit`` for ModelRegistry."""

    def audit(self, model: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries ``{at, actor, model, kind, name, from, to, reason, forced}``, newest first.

        ``kind``: alias, tag, branch (``name`` is the ref; from/to are versions), state
        (``name`` is the version; from/to are states), metrics (``to`` holds the values set,
        ``from`` what those keys held before).
        """
        with self.meta.read() as conn:
            mid = self.meta.model_id(conn, model) if model is not None else None
            v, mo = s.versions.c, s.models.c
            q = sa.select(v.id, mo.name, v.number).join_from(
                s.versions, s.models, v.model_id == mo.id
            )
            if mid is not None:
                q = q.where(v.model_id == mid)
            refs = {vid: f"{name}@v{n}" for vid, name, n in conn.execute(q)}
            model_names = dict(conn.execute(sa.select(mo.id, mo.name)).all())
            out: list[dict[str, Any]] = []

            def where(table: sa.Table):
                q = sa.select(table)
                return q if mid is None else q.where(table.c.model_id == mid)

            for r in conn.execute(where(s.ref_events)):
                out.append(
                    {
                        "at": r.at,
                        "actor": r.actor,
                        "model": model_names.get(r.model_id),
                        "kind": r.kind,
                        "name": r.name,
                        "from": refs.get(r.old_version),
                        "to": refs.get(r.new_version),
                        "reason": r.reason,
                        "forced": bool(r.forced),
                        "rollback": bool(r.rollback),
                    }
                )
            for r in conn.execute(where(s.state_events)):
                out.append(
                    {
                        "at": r.at,
                        "actor": r.actor,
                        "model": model_names.get(r.model_id),
                        "kind": "state",
                        "name": refs.get(r.version_id),
                        "from": r.old_state,
                        "to": r.new_state,
                        "reason": r.reason,
                        "forced": bool(r.forced),
                        "overridden": r.overridden,
                    }
                )
            for r in conn.execute(where(s.metric_events)):
                out.append(
                    {
                        "at": r.at,
                        "actor": r.actor,
                        "model": model_names.get(r.model_id),
                        "kind": "metrics",
                        "name": refs.get(r.version_id),
                        "from": r.previous,
                        "to": r.metrics,
                        "reason": r.reason,
                        "forced": False,
                    }
                )
        out.sort(key=lambda e: e["at"], reverse=True)
        if limit is not None:
            out = out[:limit]
        for e in out:
            e["at"] = iso(e["at"])
        return out
